"""What every fake vendor API shares: an aiohttp app with in-memory state, an auth
check, the vendor's error envelope, injected faults, and a record of the traffic.

Control endpoints (never authenticated, never recorded):
- ``POST /_sandbox/faults`` ``{"path": "/incidents", "status": 429, "times": 2,
  "retry_after": 1, "method": "GET", "delay": 0, "disconnect": null}``: the next
  ``times`` matching requests get ``status`` in the vendor's envelope (``path`` ending
  in ``*`` matches a prefix). ``delay`` alone slows requests down; ``disconnect``
  drops the connection ``"before"`` the fake acts, or ``"after"`` it acted (the
  ambiguous failure: the effect happened, the answer was lost).
- ``DELETE /_sandbox/faults``: forget pending faults.
- ``GET /_sandbox/state``: everything the fake holds, as JSON.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

__all__ = ["Exchange", "Fake", "Fault", "now"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Fault(BaseModel):
    path: str
    status: int | None = Field(None, ge=100, le=599)
    times: int = Field(1, ge=1)
    method: str | None = None
    retry_after: float | None = Field(None, ge=0)
    delay: float = Field(0.0, ge=0)
    disconnect: Literal["before", "after"] | None = None

    def matches(self, request: web.Request) -> bool:
        if self.method and self.method.upper() != request.method:
            return False
        if self.path.endswith("*"):
            return request.path.startswith(self.path[:-1])
        return request.path == self.path


@dataclass
class Exchange:
    """One request the fake answered (or dropped: ``status`` is None)."""

    vendor: str
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    injected: bool = False


class Fake:
    """Base of the vendor fakes; subclasses add routes, auth and their error envelope."""

    vendor = "fake"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.faults: list[Fault] = []
        self.traffic: list[Exchange] = []
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    # -- what subclasses provide ------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def authorised(self, request: web.Request) -> web.StreamResponse | None:
        """``None`` when the request may proceed, else the vendor's 401 answer."""
        raise NotImplementedError

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        """An error answer in the vendor's envelope."""
        raise NotImplementedError

    # -- the app ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._inject, self._authenticate])
        app.add_routes(
            [
                web.post("/_sandbox/faults", self._add_fault),
                web.delete("/_sandbox/faults", self._clear_faults),
                web.get("/_sandbox/state", self._dump_state),
                *self.routes(),
            ]
        )
        return app

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    @staticmethod
    def _control(request: web.Request) -> bool:
        return request.path.startswith("/_sandbox/")

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._control(request):
            return await handler(request)
        exchange = Exchange(
            vendor=self.vendor,
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            headers=dict(request.headers),
            body=await request.read(),
        )
        self.traffic.append(exchange)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # unknown routes, wrong methods
            response = self.error(request, exc.status, exc.reason)
        exchange.status = response.status
        exchange.response_headers = dict(response.headers)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            exchange.response_body = response.body
        return response

    @web.middleware
    async def _inject(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = None if self._control(request) else self._take_fault(request)
        if fault is None:
            return await handler(request)
        self.traffic[-1].injected = True
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.disconnect == "after":
            await handler(request)
        if fault.disconnect:
            if request.transport is not None:  # None: the caller already went away
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the request without answering
        if fault.status is None:
            return await handler(request)
        response = self.error(request, fault.status, f"injected fault ({fault.status})")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.matches(request):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._control(request) and (denied := self.authorised(request)) is not None:
            return denied
        return await handler(request)

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = Fault.model_validate(await request.json())
        except ValueError as exc:
            return web.json_response({"error": f"bad fault: {exc}"}, status=400)
        self.inject(fault)
        return web.json_response(fault.model_dump(), status=201)

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"cleared": True})

    async def _dump_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())
