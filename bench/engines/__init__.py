"""One adapter per engine: how to serve the workload, start runs, and read progress.

The worker side (``serve``) runs in its own process (``python -m bench.worker``) so it can
be SIGKILLed; the driver side (``Driver``) runs in the phase process. Every measurement
a phase reports is read back from the engine's own tables, never from driver clocks.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

__all__ = ["ENGINES", "Driver", "ServeOptions", "Span", "driver", "serve"]

ENGINES = ("resolute", "dbos", "absurd")
_MODULES = {
    "resolute": "bench.engines.resolute_engine",
    "dbos": "bench.engines.dbos_engine",
    "absurd": "bench.engines.absurd_engine",
}


@dataclass(frozen=True)
class ServeOptions:
    url: str
    worker_id: str
    concurrency: int
    pool: int
    lease: float
    ready_file: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        return cls(args.db, args.worker_id, args.concurrency, args.pool, args.lease, args.ready)

    def mark_ready(self) -> None:
        """Tell the phase process the worker is serving (it polls for this file)."""
        Path(self.ready_file).touch()


@dataclass(frozen=True)
class Span:
    completed: int
    first_start: datetime | None
    last_end: datetime | None

    @property
    def seconds(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return (self.last_end - self.first_start).total_seconds()


class Driver(Protocol):
    """The client side of an engine, inside the phase process."""

    async def prepare(self, url: str) -> None:
        """Schema the engine needs before its worker or client can start."""

    async def open(self, url: str, starters: int) -> None: ...

    async def start(self, body: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...

    async def span(self, conn: asyncpg.Connection) -> Span:
        """Completed runs, first start and last completion, from the engine's tables."""

    async def latencies(self, conn: asyncpg.Connection) -> list[float]:
        """Seconds from start to completion of every completed run."""


def _module(engine: str) -> Any:
    return importlib.import_module(_MODULES[engine])


def driver(engine: str) -> Driver:
    d: Driver = _module(engine).Driver()
    return d


def serve(engine: str, opts: ServeOptions) -> None:
    """Run the engine's worker until SIGTERM (or SIGKILL)."""
    _module(engine).serve(opts)
