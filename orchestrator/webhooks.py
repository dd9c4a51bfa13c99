"""Webhook trigger routes: the route table built from the flows, and delivery handling.

A delivery is verified on its raw bytes, parsed, then stored together with the runs it
starts (or the signals it sends to active runs) in one transaction: a 202 means the
runs exist; anything else means nothing was written and the sender may retry. A
redelivery (same route and delivery id) answers with the first delivery's runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from aiohttp import web

from .definition import FlowDefinition
from .errors import ConfigurationError
from .logs import logger_for
from .metrics import WEBHOOK_DELIVERIES
from .problems import Problem, as_problem, parse_json, too_large
from .redaction import redact
from .store import DeliveryResult, DeliveryTarget, Store
from .triggers import WebhookTrigger
from .verify import NoVerification, Verifier

__all__ = [
    "DELIVERY_ID_HEADER",
    "RESERVED_PREFIXES",
    "WebhookEndpoint",
    "WebhookRoute",
    "delivery_id",
    "event_type",
    "webhook_routes",
]

DELIVERY_ID_HEADER = "X-Webhook-Id"  # PagerDuty's, identical across retries
RESERVED_PREFIXES = ("/api", "/health", "/metrics")
_CHUNK = 64 * 1024
_OUTCOMES = {400: "malformed", 401: "unverified", 413: "too_large", 503: "unavailable"}

Dedup = Callable[[dict[str, Any], dict[str, Any]], str | None]
Correlate = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """One path and every flow listening on it."""

    path: str
    verifiers: tuple[Verifier, ...]  # a delivery must satisfy all of them
    flows: tuple[tuple[str, bool], ...]  # (flow, deliver_to_active)
    dedup: Dedup | None = None
    correlate: Correlate | None = None
    signal_name: Correlate | None = None

    @property
    def verification(self) -> str:
        """What ``webhook_deliveries.verification`` records for an accepted delivery."""
        return "none" if all(isinstance(v, NoVerification) for v in self.verifiers) else "verified"


def webhook_routes(flows: Mapping[str, FlowDefinition]) -> list[WebhookRoute]:
    """The route table; refuses (``ConfigurationError``) what would be unsafe or ambiguous."""
    grouped: dict[str, list[tuple[str, WebhookTrigger]]] = {}
    for name, definition in flows.items():
        for trigger in definition.triggers:
            if isinstance(trigger, WebhookTrigger):
                grouped.setdefault(trigger.path, []).append((name, trigger))
    return [_route(path, entries) for path, entries in sorted(grouped.items())]


def _route(path: str, entries: list[tuple[str, WebhookTrigger]]) -> WebhookRoute:
    if any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES) or any(
        c in path for c in "{}"
    ):
        raise ConfigurationError(
            f"webhook route {path!r} of flow {entries[0][0]!r} is not allowed: paths under "
            f"{', '.join(RESERVED_PREFIXES)} belong to the service and '{{' '}}' are not "
            "allowed; choose another path"
        )
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"a flow has two webhook triggers on {path}: {names}")
    verifiers: list[Verifier] = []
    for name, trigger in entries:
        if trigger.verify is None:
            raise ConfigurationError(
                f"flow {name!r}: webhook route {path} has no verification, so anyone could "
                "start runs by posting to it. Pass verify=pagerduty_v3([secret, ...]) or "
                "verify=HmacSignature(header=..., secrets=[...]); if the route really is "
                "meant to be open, say so with verify=no_verification()."
            )
        if not callable(getattr(trigger.verify, "verify", None)):
            raise ConfigurationError(
                f"flow {name!r}: verify= of webhook route {path} is a "
                f"{type(trigger.verify).__name__}, not a verifier with "
                "verify(body: bytes, headers) -> bool"
            )
        if all(v is not trigger.verify for v in verifiers):
            verifiers.append(cast(Verifier, trigger.verify))
    return WebhookRoute(
        path,
        tuple(verifiers),
        tuple((name, t.deliver_to_active) for name, t in entries),
        _shared(path, "dedup", entries, [t.dedup for _, t in entries]),
        _shared(path, "correlate", entries, [t.correlate for _, t in entries]),
        _shared(path, "signal_name", entries, [t.signal_name for _, t in entries]),
    )


def _shared(path: str, what: str, entries: list[tuple[str, WebhookTrigger]], fns: list[Any]) -> Any:
    """A delivery has one id and one correlation key, so flows sharing a route must agree
    on the function that extracts it (or leave it to the other flow)."""
    given = [(name, fn) for (name, _), fn in zip(entries, fns, strict=True) if fn is not None]
    if any(fn is not given[0][1] for _, fn in given):
        raise ConfigurationError(
            f"flows {', '.join(n for n, _ in given)} share webhook route {path} but pass "
            f"different {what}= functions; pass the same one, or use separate paths"
        )
    return given[0][1] if given else None


def delivery_id(
    route: WebhookRoute, payload: dict[str, Any], headers: Mapping[str, str], body: bytes
) -> str:
    """The trigger's ``dedup``, else ``X-Webhook-Id``, else ``event.id``, else the body's hash."""
    if route.dedup is not None:
        # The case-insensitive header mapping, where dedup functions only read.
        found = route.dedup(payload, cast(dict[str, Any], headers))
        if found is not None and found != "":
            return str(found)
    if header := headers.get(DELIVERY_ID_HEADER):
        return header
    event = payload.get("event")
    if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]:
        return str(event["id"])
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_type(payload: dict[str, Any]) -> str | None:
    """The default signal name for a delivery to an active run: PagerDuty v3's
    ``event.event_type``, else a top-level ``event_type`` or ``type``."""
    event = payload.get("event")
    if isinstance(event, dict) and isinstance(event.get("event_type"), str):
        return str(event["event_type"])
    for key in ("event_type", "type"):
        if isinstance(payload.get(key), str):
            return str(payload[key])
    return None


class WebhookEndpoint:
    """The aiohttp handler of one route."""

    def __init__(self, route: WebhookRoute, store: Store, max_body_bytes: int) -> None:
        self.route = route
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: web.Request) -> web.Response:
        try:
            result, delivery = await self._deliver(request)
        except Exception as exc:
            problem = as_problem(request, exc)
            WEBHOOK_DELIVERIES.labels(self.route.path, _OUTCOMES.get(problem.status, "error")).inc()
            return problem.response()
        WEBHOOK_DELIVERIES.labels(
            self.route.path, "duplicate" if result.duplicate else "accepted"
        ).inc()
        body = {
            "delivery": delivery,
            "duplicate": result.duplicate,
            "run_ids": result.run_ids,
            "signal_ids": result.signal_ids,
        }
        return web.json_response(body, status=202)

    async def _deliver(self, request: web.Request) -> tuple[DeliveryResult, str]:
        route = self.route
        body = await _read(request, self.max_body_bytes)
        headers = redact(dict(request.headers))
        for verifier in route.verifiers:
            if not verifier.verify(body, request.headers):
                await self._reject(request, body, headers, verifier)
        payload = _parse(body)
        try:
            delivery = delivery_id(route, payload, request.headers, body)
            key = route.correlate(payload) if route.correlate is not None else None
            name = route.signal_name(payload) if route.signal_name else event_type(payload)
        except Exception as exc:
            logger_for("resolute.webhook").warning(
                "%s: the trigger could not read the delivery", route.path, exc_info=exc
            )
            raise Problem(
                400,
                f"{route.path}: the trigger's dedup/correlate/signal_name function could not "
                f"read this payload ({type(exc).__name__}: {exc})",
            ) from None
        targets = [DeliveryTarget(flow, active, name) for flow, active in route.flows]
        result = await self.store.record_delivery(
            route=route.path,
            delivery_id=delivery,
            headers=headers,
            body=payload,
            verification=route.verification,
            correlation_key=None if key is None else str(key),
            targets=targets,
        )
        logger_for(
            "resolute.webhook",
            delivery_id=delivery,
            run_id=result.run_ids[0] if len(result.run_ids) == 1 else None,
        ).info(
            "%s delivery on %s: runs %s, signals %s",
            "duplicate" if result.duplicate else "accepted",
            route.path,
            result.run_ids,
            result.signal_ids,
        )
        return result, delivery

    async def _reject(
        self, request: web.Request, body: bytes, headers: dict[str, Any], verifier: Verifier
    ) -> NoReturn:
        """Keep the failed attempt for the audit (never its body), then answer 401."""
        name = getattr(verifier, "name", type(verifier).__name__)
        message = (
            f"the delivery's signature does not verify ({name}); check the signing "
            f"secret configured for {self.route.path}"
        )
        delivery = request.headers.get(DELIVERY_ID_HEADER) or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
        log = logger_for("resolute.webhook", delivery_id=delivery)
        log.warning("rejected delivery on %s: %s", self.route.path, message)
        try:
            await self.store.record_rejected_delivery(
                route=self.route.path, delivery_id=delivery, headers=headers, error=message
            )
        except Exception as exc:
            log.warning("could not record the rejected delivery: %s", exc)
        raise Problem(401, message)


async def _read(request: web.Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` (never read in full)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> dict[str, Any]:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise Problem(400, f"the body must be a JSON object, not {type(payload).__name__}")
    return payload
