"""The service process: ``resolute serve`` (HTTP server and a worker) or ``resolute api``
(HTTP server only, workers scaled separately), until SIGTERM or SIGINT.

Shutdown order: stop accepting connections and let in-flight requests finish, then stop
the worker (its steps get a grace period, unfinished runs are handed back), then close
the database pool.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace

from aiohttp import web

from .database import check_reachable, create_engine, display_url, migrate, resolve_database_url
from .server import create_app
from .settings import Settings
from .store import Store
from .webhooks import webhook_routes
from .worker import Worker

__all__ = ["prepare_database", "run_service"]

log = logging.getLogger("resolute.service")


async def prepare_database(worker: Worker, store: Store, url: str) -> None:
    """What ``Worker.start`` does before claiming: reachable database, current schema,
    flows known (webhooks start runs by flow name, before any worker has run)."""
    await check_reachable(store.engine, url)
    if worker.config.auto_migrate:
        await migrate(url)
    await worker.register_flows(store)


async def run_service(worker: Worker, settings: Settings, *, with_worker: bool) -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    webhook_routes(worker.flows)  # unsafe routes stop us before any database is touched
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    url = worker.config.database_url or resolve_database_url(settings.database_url)
    worker.config = replace(worker.config, database_url=url)
    store = Store(create_engine(url, pool_size=settings.pool_size))
    runner: web.AppRunner | None = None
    started = False
    try:
        app = create_app(store, worker.flows, settings)
        if with_worker:
            await worker.start()
            started = True
        else:
            await prepare_database(worker, store, url)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
        await site.start()
        log.info(
            "serving on %s (%s) with database %s",
            ", ".join(f"http://{a[0]}:{a[1]}" for a in runner.addresses),
            "server and worker" if with_worker else "server only",
            display_url(url),
        )
        await stopping.wait()
        log.info("stopping: no new connections, finishing in-flight requests")
    finally:
        if runner is not None:
            await runner.cleanup()
        if started:
            await worker.stop()
        await store.engine.dispose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")
