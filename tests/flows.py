"""Flows the tests run, importable by worker subprocesses (``resolute worker tests.flows:...``).

Side effects land in ``tests.side_effects`` (conftest makes it) so tests can count,
from the database, how often each step really ran.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
from pydantic import BaseModel

from orchestrator import (
    Flow,
    FlowState,
    Output,
    RetryPolicy,
    StepContext,
    Template,
    Worker,
    WorkerConfig,
    node,
    timer,
)
from orchestrator.database import asyncpg_dsn
from orchestrator.store import Store

_pools: dict[str, asyncpg.Pool] = {}


async def record(ctx: StepContext, note: str = "") -> None:
    """One row per execution of a step, in the run's own database."""
    url = os.environ["RESOLUTE_DATABASE_URL"]
    pool = _pools.get(url)
    if pool is None:
        pool = _pools[url] = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
    await pool.execute(
        "INSERT INTO tests.side_effects (run_id, step, attempt, note) VALUES ($1, $2, $3, $4)",
        ctx.run_id,
        ctx.step,
        ctx.attempt,
        note,
    )


async def close_pools() -> None:
    while _pools:
        await _pools.popitem()[1].close()


def _sleep_for(step: str) -> float:
    return float(os.environ.get(f"RESOLUTE_TEST_SLEEP_{step.upper().replace('-', '_')}", "0"))


class Event(BaseModel):
    title: str
    severity: str
    service: str


class Ticket(BaseModel):
    key: str
    summary: str


class Diagnostics(BaseModel):
    confidence: float
    summary: str


@node("parse")
async def parse(ctx: StepContext, payload: dict[str, Any]) -> Event:
    await record(ctx)
    return Event(**payload)


@node("create-ticket")
async def create_ticket(ctx: StepContext, summary: str) -> Ticket:
    await asyncio.sleep(_sleep_for("ticket"))
    await record(ctx)
    return Ticket(key=f"OPS-{abs(hash(ctx.run_id)) % 1000}", summary=summary)


@node("notify")
async def notify(ctx: StepContext, event: Event) -> dict[str, str]:
    await asyncio.sleep(_sleep_for("notify"))
    await record(ctx)
    return {"channel": "#incidents", "text": event.title}


@node("diagnose")
async def diagnose(ctx: StepContext, event: Event) -> Diagnostics:
    await asyncio.sleep(_sleep_for("diagnose"))
    await record(ctx)
    return Diagnostics(confidence=0.95 if event.severity == "critical" else 0.5, summary="db ok")


@node("comment")
async def comment(ctx: StepContext, body: str) -> str:
    await record(ctx, body)
    return body


@node("remediate", retry=RetryPolicy(max_attempts=3, initial_interval=0.05))
async def remediate(ctx: StepContext, diagnostics: Diagnostics) -> dict[str, bool]:
    await asyncio.sleep(_sleep_for("remediate"))
    await record(ctx)
    return {"ok": True}


@node("resolve")
async def resolve_incident(ctx: StepContext, key: str) -> str:
    await record(ctx)
    return f"resolved {key}"


@node("escalate")
async def escalate(ctx: StepContext, event: Event) -> str:
    await record(ctx)
    return "escalated"


def confident(s: FlowState) -> bool:
    return s.get("diagnostics", Diagnostics).confidence > 0.9


def remediated(s: FlowState) -> bool:
    return bool(s.get("remediation")["ok"])


def incident_flow(timer_seconds: float = 0.5) -> Flow:
    return (
        Flow("incident")
        .then(parse.as_("event"))
        .parallel()
        .then(create_ticket.as_("ticket").with_input(Output("event.title")))
        .then(notify.as_("notified"))
        .then(diagnose.as_("diagnostics"))
        .end_parallel()
        .then(comment.as_("commented").with_input(Template("{ticket.key}: {diagnostics.summary}")))
        .when(confident)
        .then(remediate.as_("remediation"))
        .when(remediated)
        .then(resolve_incident.as_("resolved").with_input(Output("ticket.key")))
        .end_when()
        .otherwise()
        .then(timer(seconds=timer_seconds).as_("grace"))
        .then(escalate.as_("escalation"))
        .end_when()
    )


CRITICAL = {"title": "DB down", "severity": "critical", "service": "db"}
MINOR = {"title": "Slow page", "severity": "minor", "service": "web"}


async def start_incidents(store: Store, n: int, payload: dict[str, str]) -> list[str]:
    """Register the incident flow (as a worker would) and start ``n`` runs."""
    definition = incident_flow().build()
    await store.register_flow(definition.name, "test", definition.fingerprint, [])
    return [(await store.start_run(definition.name, payload))[0] for _ in range(n)]


def worker() -> Worker:
    """A worker for subprocess tests, configured from the environment."""
    cfg = WorkerConfig(
        task_queue="test",
        worker_id=os.environ.get("RESOLUTE_WORKER_ID"),
        lease_seconds=float(os.environ.get("RESOLUTE_TEST_LEASE", "3")),
        heartbeat_seconds=0.5,
        poll_seconds=0.2,
        hold_seconds=0.2,
        auto_migrate=False,
    )
    timer_s = float(os.environ.get("RESOLUTE_TEST_TIMER", "0.5"))
    return Worker(cfg).with_flow(incident_flow(timer_s))
