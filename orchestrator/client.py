"""``Client``: start, inspect, wait for and cancel runs from any process."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from . import events as ev
from .database import create_engine, resolve_database_url
from .errors import ResoluteError
from .store import RunInfo, SignalResult, Store

__all__ = ["Client", "RunTimeoutError"]


class RunTimeoutError(ResoluteError):
    """``Client.wait`` gave up before the run ended."""


class Client:
    """``Client(database_url)``; ``None`` means ``RESOLUTE_DATABASE_URL`` or embedded."""

    def __init__(self, database_url: str | None = None, *, pool_size: int = 5) -> None:
        self._url = database_url
        self._pool_size = pool_size
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            url = resolve_database_url(self._url)
            self._store = Store(create_engine(url, pool_size=self._pool_size))
        return self._store

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.engine.dispose()
            self._store = None

    async def start(
        self,
        flow_name: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        correlation_key: str | None = None,
    ) -> str:
        """Start a run; a repeated idempotency key returns the first run's id."""
        run_id, _ = await self.store.start_run(
            flow_name, input, idempotency_key=idempotency_key, correlation_key=correlation_key
        )
        return run_id

    async def get_run(self, run_id: str) -> RunInfo:
        return await self.store.get_run(run_id)

    async def list_runs(self, **filters: Any) -> list[RunInfo]:
        return await self.store.list_runs(**filters)

    async def events(self, run_id: str) -> list[ev.Event]:
        await self.store.get_run(run_id)
        return await self.store.events(run_id)

    async def wait(self, run_id: str, timeout: float = 60.0) -> RunInfo:
        """Block until the run completes, fails or is cancelled."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            run = await self.store.get_run(run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
            if time.monotonic() >= deadline:
                raise RunTimeoutError(
                    f"run {run_id} still {run.status} after {timeout:g}s; "
                    f"inspect it with `resolute runs events {run_id}`"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def signal(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> SignalResult:
        """Send a signal to one run, or to the runs of an incident (correlation key).

        A signal that arrives before its wait is kept until the wait consumes it. A signal
        not aimed at one run also starts the flows triggered by ``signal(name)``.
        """
        return await self.store.send_signal(
            name,
            payload,
            run_id=run_id,
            correlation_key=correlation_key,
            idempotency_key=idempotency_key,
            sent_by="client",
        )

    async def retry(self, run_id: str) -> bool:
        """Send a failed run back to work from its failed step."""
        return await self.store.retry(run_id, by="client")

    async def cancel(self, run_id: str, reason: str, *, by: str | None = "client") -> bool:
        """Cancel a run that has not ended; the worker driving it is fenced out."""
        return await self.store.cancel(run_id, reason, by)
