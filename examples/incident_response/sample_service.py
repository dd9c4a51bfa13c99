"""The service under incident: a stand-in ``checkout-api`` on loopback.

``GET /health`` answers 200 while healthy and 503 with the fault's signature while a
fault is active (what the diagnostics runbook reads). ``POST /admin/restart`` restarts
it, which clears faults a restart fixes (an exhausted connection pool) but not those it
does not (a payment gateway that times out upstream): the remediation really changes
its state. ``POST /admin/fault`` breaks it; ``GET /admin/state`` shows everything.

Standalone: ``python -m examples.incident_response.sample_service --port 8720``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = ["FAULTS", "SampleService", "start_sample_service"]


@dataclass(frozen=True)
class Fault:
    detail: str
    cleared_by_restart: bool


FAULTS = {
    "connection-pool-exhausted": Fault("0/20 database connections free, 143 requests queued", True),
    "payment-gateway-timeouts": Fault("payments-gateway answers in 30 s+ (upstream outage)", False),
}


@dataclass
class _State:
    fault: str | None = None
    latency: float = 0.0  # extra seconds /health takes while degraded
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, action: str, **details: Any) -> None:
        self.history.append({"at": datetime.now(UTC).isoformat(), "action": action, **details})


class SampleService:
    """The running service: ``url``, ``state()``, ``break_()``, ``close()``."""

    def __init__(self) -> None:
        self._state = _State()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_post("/admin/restart", self._restart)
        app.router.add_post("/admin/fault", self._fault)
        app.router.add_get("/admin/state", self._dump)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SampleService:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def break_(self, fault: str, *, latency: float = 0.0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self._state.fault, self._state.latency = fault, latency
        self._state.record("fault", fault=fault)

    def state(self) -> dict[str, Any]:
        s = self._state
        return {
            "healthy": s.fault is None,
            "fault": s.fault,
            "restarts": s.restarts,
            "history": list(s.history),
        }

    async def _health(self, request: web.Request) -> web.Response:
        s = self._state
        fault = s.fault
        if fault is None:
            uptime = round(time.monotonic() - s.started_at, 1)
            return web.json_response({"status": "ok", "uptime_seconds": uptime})
        await asyncio.sleep(s.latency)
        body = {"status": "degraded", "fault": fault, "detail": FAULTS[fault].detail}
        return web.json_response(body, status=503)

    async def _restart(self, request: web.Request) -> web.Response:
        s = self._state
        s.restarts += 1
        s.started_at = time.monotonic()
        cleared = s.fault if s.fault and FAULTS[s.fault].cleared_by_restart else None
        if cleared:
            s.fault = None
        s.record("restart", cleared=cleared)
        return web.json_response({"restarted": True, "cleared": cleared, "fault": s.fault})

    async def _fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.break_(str(body.get("fault")), latency=float(body.get("latency", 0)))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state())

    async def _dump(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())


async def start_sample_service(host: str = "127.0.0.1", port: int = 0) -> SampleService:
    return await SampleService().start(host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8720)
    parser.add_argument("--fault", choices=sorted(FAULTS), help="start broken")
    args = parser.parse_args()
    service = SampleService()
    if args.fault:
        service.break_(args.fault)
    print(f"checkout-api on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    web.run_app(service.app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
