"""Prometheus metrics.

Two sources: what this process observed (steps it ran, leases it took over, runs it
ended, webhooks it answered), kept in prometheus-client's default registry; and what
the database says at scrape time (runs by status, queue depth), because runs are
created and ended by every process of the deployment, not only this one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import events as ev
from .store import Store

__all__ = [
    "LEASE_TAKEOVERS",
    "RUNS_ENDED",
    "STEP_SECONDS",
    "WEBHOOK_DELIVERIES",
    "DatabaseCollector",
    "observe_step",
    "render",
]

log = logging.getLogger("resolute.metrics")

STEP_SECONDS = Histogram(
    "resolute_step_duration_seconds",
    "Duration of one step attempt, by flow, step alias and outcome (completed|failed).",
    ["flow", "step", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RUNS_ENDED = Counter(
    "resolute_worker_runs_ended",
    "Runs this process's worker drove to their end, by flow and status.",
    ["flow", "status"],
)
LEASE_TAKEOVERS = Counter(
    "resolute_lease_takeovers",
    "Runs freed from workers that stopped heartbeating, by this process's recovery loop.",
)
WEBHOOK_DELIVERIES = Counter(
    "resolute_webhook_deliveries",
    "Webhook deliveries answered, by route and outcome "
    "(accepted|duplicate|unverified|malformed|too_large|unavailable|error).",
    ["route", "outcome"],
)


def observe_step(flow: str, outcome: ev.Event) -> None:
    """Record a step attempt's duration from its outcome event."""
    duration_ms = getattr(outcome, "duration_ms", None)
    if duration_ms is not None:
        status = outcome.type.removeprefix("step.")
        _step_histogram(flow, outcome.step or "", status).observe(duration_ms / 1000)


@functools.cache
def _step_histogram(flow: str, step: str, outcome: str) -> Histogram:
    """The labelled child, looked up once (``labels`` takes a lock every call)."""
    return STEP_SECONDS.labels(flow, step, outcome)


class DatabaseCollector:
    """Runs by flow and status, and runnable runs per task queue, read from PostgreSQL.

    ``collect`` is synchronous (prometheus-client), so the scrape handler awaits
    ``refresh`` first and ``collect`` reports that snapshot.
    """

    def __init__(self, store: Store, timeout: float = 5.0) -> None:
        self._store = store
        self._timeout = timeout
        self._counts: list[tuple[str, str, int]] = []
        self._depth: dict[str, int] = {}
        self._up = False

    async def refresh(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                self._counts = await self._store.run_counts()
                self._depth = await self._store.queue_depth()
            self._up = True
        except Exception as exc:
            log.warning("metrics: cannot read run counts from the database: %s", exc)
            self._counts, self._depth, self._up = [], {}, False

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "resolute_database_up", "1 when the last scrape could read the database."
        )
        up.add_metric([], 1.0 if self._up else 0.0)
        yield up
        runs = GaugeMetricFamily(
            "resolute_runs", "Runs in the database by flow and status.", labels=["flow", "status"]
        )
        started: dict[str, int] = {}
        for flow, status, n in self._counts:
            runs.add_metric([flow, status], n)
            started[flow] = started.get(flow, 0) + n
        yield runs
        total = CounterMetricFamily(
            "resolute_runs_started",
            "Runs ever started, by flow (from the database).",
            labels=["flow"],
        )
        for flow, n in sorted(started.items()):
            total.add_metric([flow], n)
        yield total
        depth = GaugeMetricFamily(
            "resolute_queue_depth",
            "Runs ready to be claimed, by task queue.",
            labels=["task_queue"],
        )
        for queue, n in sorted(self._depth.items()):
            depth.add_metric([queue], n)
        yield depth


async def render(collector: DatabaseCollector) -> bytes:
    """The exposition text: this process's metrics and the database snapshot."""
    await collector.refresh()
    return generate_latest(REGISTRY) + generate_latest(collector)
