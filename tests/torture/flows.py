"""The torture flow, importable by worker subprocesses (``tests.torture.flows:worker``).

It uses every durable construct a crash can interrupt: a parallel block, a when nested
in a when (each arm with a durable timer or a retried step), and retries with injected
failures. Whether a run is critical, which steps fail their first attempt and how long
each attempt takes are derived from the run id, so a run behaves the same however often
its worker dies. Side effects land in ``tests.side_effects`` (made by tests/conftest.py),
one row per execution, with the attempt number, so the checks can tell crash windows
(an attempt with no recorded outcome) from real duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import asyncpg
from pydantic import BaseModel

from orchestrator import (
    Flow,
    FlowState,
    RetryPolicy,
    StepContext,
    Worker,
    WorkerConfig,
    node,
    timer,
)
from orchestrator.database import asyncpg_dsn

FLOW = "torture"
QUEUE = "torture"
RETRY = RetryPolicy(max_attempts=4, initial_interval=0.05, jitter=0)
TIMER_SECONDS = 0.3

_pools: dict[str, asyncpg.Pool] = {}


def _roll(run_id: str, salt: str) -> int:
    """A stable number in 0..99 for this run and salt."""
    return int(hashlib.sha256(f"{run_id}/{salt}".encode()).hexdigest()[:8], 16) % 100


def fails_first_attempt(run_id: str, step: str) -> bool:
    return _roll(run_id, f"fail/{step}") < 30


def remediation_works(run_id: str) -> bool:
    return _roll(run_id, "remediation") >= 25


async def _work(ctx: StepContext, *, flaky: bool = False) -> None:
    """Sleep a little (so kills land mid-step), maybe fail, then record the side effect."""
    await asyncio.sleep(_roll(ctx.run_id, f"sleep/{ctx.step}/{ctx.attempt}") / 1000)
    if flaky and ctx.attempt == 1 and fails_first_attempt(ctx.run_id, ctx.step):
        raise RuntimeError(f"injected failure of {ctx.step} attempt 1")
    url = os.environ["RESOLUTE_DATABASE_URL"]
    pool = _pools.get(url)
    if pool is None:
        pool = _pools[url] = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
    await pool.execute(
        "INSERT INTO tests.side_effects (run_id, step, attempt) VALUES ($1, $2, $3)",
        ctx.run_id,
        ctx.step,
        ctx.attempt,
    )


class Incident(BaseModel):
    title: str
    critical: bool


class Diagnosis(BaseModel):
    confidence: float


@node("intake")
async def intake(ctx: StepContext, payload: dict[str, Any]) -> Incident:
    await _work(ctx)
    return Incident(title=payload["title"], critical=payload["severity"] == "critical")


@node("open-ticket")
async def open_ticket(ctx: StepContext, incident: Incident) -> dict[str, str]:
    await _work(ctx)
    return {"key": f"OPS-{_roll(ctx.run_id, 'key')}"}


@node("page-oncall")
async def page_oncall(ctx: StepContext, incident: Incident) -> dict[str, str]:
    await _work(ctx)
    return {"paged": "oncall"}


@node("diagnose", retry=RETRY)
async def diagnose(ctx: StepContext, incident: Incident) -> Diagnosis:
    await _work(ctx, flaky=True)
    return Diagnosis(confidence=0.95 if incident.critical else 0.4)


@node("remediate", retry=RETRY)
async def remediate(ctx: StepContext, diagnosis: Diagnosis) -> dict[str, bool]:
    await _work(ctx, flaky=True)
    return {"ok": remediation_works(ctx.run_id)}


@node("resolve")
async def resolve(ctx: StepContext, incident: Incident) -> str:
    await _work(ctx)
    return "resolved"


@node("escalate")
async def escalate(ctx: StepContext, incident: Incident) -> str:
    await _work(ctx)
    return "escalated"


@node("close")
async def close(ctx: StepContext, incident: Incident) -> str:
    await _work(ctx)
    return "closed"


@node("postmortem", retry=RETRY)
async def postmortem(ctx: StepContext, incident: Incident) -> str:
    await _work(ctx, flaky=True)
    return "written"


def critical(s: FlowState) -> bool:
    return s.get("incident", Incident).critical


def remediated(s: FlowState) -> bool:
    return bool(s.raw("remediation")["ok"])


def torture_flow() -> Flow:
    return (
        Flow(FLOW, task_queue=QUEUE)
        .then(intake.as_("incident"))
        .parallel()
        .then(open_ticket.as_("ticket"))
        .then(page_oncall.as_("page"))
        .then(diagnose.as_("diagnosis"))
        .end_parallel()
        .when(critical)
        .then(remediate.as_("remediation"))
        .when(remediated)
        .then(resolve.as_("resolved"))
        .otherwise()
        .then(timer(seconds=TIMER_SECONDS).as_("grace"))
        .then(escalate.as_("escalated"))
        .end_when()
        .otherwise()
        .then(timer(seconds=TIMER_SECONDS).as_("cooldown"))
        .then(close.as_("closed"))
        .end_when()
        .then(postmortem.as_("postmortem"))
    )


def expected_steps(run_id: str, critical: bool) -> set[str]:
    """The aliases of the node steps a run must have completed."""
    common = {"incident", "ticket", "page", "diagnosis", "postmortem"}
    if not critical:
        return common | {"closed"}
    return common | {"remediation", "resolved" if remediation_works(run_id) else "escalated"}


def worker() -> Worker:
    """A worker configured from the environment (set by ``tests.torture.procs``)."""
    cfg = WorkerConfig(
        task_queue=QUEUE,
        worker_id=os.environ.get("RESOLUTE_WORKER_ID"),
        max_concurrent=int(os.environ.get("RESOLUTE_TORTURE_CONCURRENCY", "50")),
        lease_seconds=float(os.environ.get("RESOLUTE_TORTURE_LEASE", "2")),
        heartbeat_seconds=0.5,
        poll_seconds=0.2,
        hold_seconds=0.2,
        auto_migrate=False,
    )
    return Worker(cfg).with_flow(torture_flow())
