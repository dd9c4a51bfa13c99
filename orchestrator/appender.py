"""Group commit for a worker's step boundaries.

Every run in memory appends one boundary per step that ends. Written one statement
each, a busy worker spends its time on round trips and PostgreSQL on commits (one WAL
flush each). The appender writes whatever boundaries are waiting as one ``APPEND``
statement: an idle worker's boundary goes out at once (a batch of one), a busy worker's
boundaries queue while up to ``max_in_flight`` statements are running and then go out
together. Each boundary is still fenced on its own: a run whose lease was lost fails
alone, with ``LeaseLostError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .errors import LeaseLostError
from .store import Boundary, Store

__all__ = ["Appender"]


class Appender:
    def __init__(
        self, store: Store, worker_id: str, *, max_in_flight: int = 2, max_batch: int = 256
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._waiting: list[tuple[Boundary, asyncio.Future[None]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False

    async def append(self, boundary: Boundary) -> None:
        """Return once the boundary is durable; ``LeaseLostError`` if its fence failed."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((boundary, done))
        self._schedule()
        await done

    async def drain(self) -> None:
        """Wait for the statements in flight (before the leases are handed back)."""
        while self._in_flight or self._waiting:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            if self._waiting and not self._in_flight:
                self._flush()

    def _schedule(self) -> None:
        # Flush on the next loop iteration, not now: the boundaries that steps finishing
        # in this iteration produce go out in the same statement.
        if not self._flush_scheduled and len(self._in_flight) < self.max_in_flight:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._waiting and len(self._in_flight) < self.max_in_flight:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            task = asyncio.get_running_loop().create_task(self._write(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting:
            self._schedule()

    async def _write(self, batch: Sequence[tuple[Boundary, asyncio.Future[None]]]) -> None:
        try:
            lost = await self.store.append_many([b for b, _ in batch], self.worker_id)
        except Exception as exc:  # the database went away: every waiter hears it
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        for b, done in batch:
            if done.done():  # the run's driver was cancelled meanwhile
                continue
            if b.run_id in lost:
                done.set_exception(LeaseLostError(b.run_id))
            else:
                done.set_result(None)
