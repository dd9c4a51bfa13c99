"""The aiohttp application: webhook routes, ``/api/v1``, ``/health/*`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .api import Api
from .database import head_revision
from .definition import FlowDefinition
from .metrics import DatabaseCollector, render
from .problems import BODY_LIMIT, json_errors
from .settings import Settings
from .store import Store
from .webhooks import WebhookEndpoint, webhook_routes

__all__ = ["create_app"]

_READY_TIMEOUT = 3.0


@functools.cache
def _head() -> str:
    return head_revision()


def create_app(
    store: Store, flows: Mapping[str, FlowDefinition], settings: Settings
) -> web.Application:
    """The service's routes over ``store``. Raises ``ConfigurationError`` for webhook
    routes that are unverified, ambiguous or clash with the service's own paths."""
    routes = webhook_routes(flows)
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body_bytes)
    app[BODY_LIMIT] = settings.max_body_bytes
    for route in routes:
        endpoint = WebhookEndpoint(route, store, settings.max_body_bytes)
        app.router.add_post(route.path, endpoint.handle)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    Api(store, token).add_routes(app)
    collector = DatabaseCollector(store)
    head = _head()

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def ready(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                version = await store.schema_version()
        except Exception as exc:
            return _not_ready(f"the database is unreachable: {exc or type(exc).__name__}")
        if version != head:
            return _not_ready(
                f"the database schema is at revision {version or 'none'} but this release "
                f"needs {head}; run `resolute db upgrade`"
            )
        return web.json_response({"status": "ready", "schema": version})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=await render(collector), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


def _not_ready(reason: str) -> web.Response:
    return web.json_response({"status": "unavailable", "error": reason}, status=503)
