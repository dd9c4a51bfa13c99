"""The torture flow, importable by worker subprocesses (``tests.torture.flows:worker``).

It uses every durable construct a crash can interrupt: a parallel block, a when nested
in a when (each arm with a durable timer or a retried step), waits for signals, signals
sent by steps, and retries with injected failures. Whether a run is critical, waits for
a signal, which steps fail their first attempt and how long each attempt takes are
derived from the run id, so a run behaves the same however often its worker dies.

Signals: a run for which ``awaits_ack`` holds waits for ``ack`` (a timeout far beyond
any delay the driver puts in, so a run that times out is a lost signal, not a race).
Its ack comes from one of three senders: its own ``page-oncall`` step
(``self_acked``), the ``page-oncall`` step of a later run (the driver puts
``ack_for: [run ids]`` in that run's input), or the driver itself at a random moment,
before or after the run reaches the wait. A run for which ``awaits_quiet`` holds waits
for ``quiet``, which nobody sends: it always times out.

Side effects land in ``tests.side_effects`` (see ``chaos.prepare``), one row per
execution, with the attempt number, so the checks can tell crash windows (an attempt
with no recorded outcome) from real duplicates. Each ``ctx.emit_signal`` call is
recorded in ``tests.emissions`` with the signal id it returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel

from orchestrator import (
    Flow,
    FlowState,
    NonRetryableError,
    Output,
    RetryPolicy,
    StepContext,
    Worker,
    WorkerConfig,
    node,
    timer,
    wait_for_signal,
)
from orchestrator.database import asyncpg_dsn

FLOW = "torture"
QUEUE = "torture"
RETRY = RetryPolicy(max_attempts=4, initial_interval=0.05, jitter=0)
TIMER_SECONDS = 0.3
ACK = "ack"
ACK_TIMEOUT = 15.0  # every ack is sent within seconds: a timeout is a lost signal
QUIET = "quiet"  # never sent: the wait always times out
QUIET_SECONDS = 0.3
DB_OUTAGE_SECONDS = 60.0  # how long test bookkeeping rides out a PostgreSQL restart

_pools: dict[str, asyncpg.Pool] = {}
T = TypeVar("T")


def _roll(run_id: str, salt: str) -> int:
    """A stable number in 0..99 for this run and salt."""
    return int(hashlib.sha256(f"{run_id}/{salt}".encode()).hexdigest()[:8], 16) % 100


def fails_first_attempt(run_id: str, step: str) -> bool:
    return _roll(run_id, f"fail/{step}") < 30


def remediation_works(run_id: str) -> bool:
    return _roll(run_id, "remediation") >= 25


def awaits_ack(run_id: str) -> bool:
    return _roll(run_id, "wait") < 35


def awaits_quiet(run_id: str) -> bool:
    return 35 <= _roll(run_id, "wait") < 50


def self_acked(run_id: str) -> bool:
    """The run's own ``page-oncall`` sends its ack (before the wait: a kept signal)."""
    return awaits_ack(run_id) and _roll(run_id, "self-ack") < 30


def transient(exc: BaseException) -> bool:
    """A connection lost or refused: the database restarting, not a wrong statement."""
    seen: BaseException | None = exc
    while seen is not None:
        code = str(getattr(seen, "sqlstate", "") or "")
        if (
            code[:2] in ("08", "57")
            or code == "53300"
            or getattr(seen, "connection_invalidated", False)
        ):
            return True
        if isinstance(seen, OSError | ConnectionError | asyncpg.InterfaceError):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


async def ride_out(what: Callable[[int], Awaitable[T]], seconds: float = DB_OUTAGE_SECONDS) -> T:
    """``what(try_number)``, retried while the database is down (test bookkeeping only:
    what the engine itself does about an outage is what the torture checks)."""
    deadline = time.monotonic() + seconds
    tries = 0
    while True:
        try:
            return await what(tries)
        except Exception as exc:
            if not transient(exc) or time.monotonic() > deadline:
                raise
        tries += 1
        await asyncio.sleep(min(0.05 * 2**tries, 0.5))


async def _pool() -> asyncpg.Pool:
    url = os.environ["RESOLUTE_DATABASE_URL"]
    pool = _pools.get(url)
    if pool is None:
        pool = _pools[url] = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
    return pool


async def _work(ctx: StepContext, *, flaky: bool = False) -> None:
    """Sleep a little (so kills land mid-step), maybe fail, then record the side effect."""
    await asyncio.sleep(_roll(ctx.run_id, f"sleep/{ctx.step}/{ctx.attempt}") / 1000)
    if flaky and ctx.attempt == 1 and fails_first_attempt(ctx.run_id, ctx.step):
        raise RuntimeError(f"injected failure of {ctx.step} attempt 1")
    token = uuid.uuid4().hex  # this execution: a retried INSERT whose commit was lost is a no-op
    pool = await _pool()

    async def record(tries: int) -> None:
        await pool.execute(
            "INSERT INTO tests.side_effects (run_id, step, attempt, note) SELECT $1, $2, $3, $4"
            + (
                " WHERE NOT EXISTS (SELECT FROM tests.side_effects WHERE note = $4)"
                if tries
                else ""
            ),
            ctx.run_id,
            ctx.step,
            ctx.attempt,
            token,
        )

    await ride_out(record)


async def _emit_acks(ctx: StepContext) -> None:
    """Send ``ack`` to this run (``self_acked``) and to the runs in ``ack_for``; each call
    is recorded with the signal id it got, so re-runs of the step can be compared."""
    targets = list(ctx.state.input.get("ack_for", []))
    if self_acked(ctx.run_id):
        targets.append(ctx.run_id)
    pool = await _pool()
    for target in targets:
        payload = {"for": target, "by": ctx.run_id}

        async def emit(_: int, target: str = target, payload: dict[str, str] = payload) -> int:
            return await ctx.emit_signal(ACK, payload, run_id=target)

        signal_id = await ride_out(emit)

        async def record(_: int, target: str = target, signal_id: int = signal_id) -> None:
            await pool.execute(
                "INSERT INTO tests.emissions (run_id, target, attempt, signal_id)"
                " VALUES ($1, $2, $3, $4)",
                ctx.run_id,
                target,
                ctx.attempt,
                signal_id,
            )

        await ride_out(record)


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


@node("page-oncall", retry=RETRY)
async def page_oncall(ctx: StepContext, incident: Incident) -> dict[str, str]:
    await _emit_acks(ctx)  # then maybe an injected failure: the re-run emits again
    await _work(ctx, flaky=True)
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


@node("acknowledge")
async def acknowledge(ctx: StepContext, ack: dict[str, Any]) -> dict[str, Any]:
    await _work(ctx)
    if ack["received"] and ack["payload"]["for"] != ctx.run_id:
        raise NonRetryableError(f"run {ctx.run_id} received the ack meant for {ack['payload']}")
    return {"received": ack["received"], "by": (ack["payload"] or {}).get("by")}


@node("postmortem", retry=RETRY)
async def postmortem(ctx: StepContext, incident: Incident) -> str:
    await _work(ctx, flaky=True)
    return "written"


def critical(s: FlowState) -> bool:
    return s.get("incident", Incident).critical


def remediated(s: FlowState) -> bool:
    return bool(s.raw("remediation")["ok"])


def acked(s: FlowState) -> bool:
    return awaits_ack(s.run_id)


def quiet(s: FlowState) -> bool:
    return awaits_quiet(s.run_id)


def torture_flow() -> Flow:
    return (
        Flow(FLOW, task_queue=QUEUE)
        .then(intake.as_("incident"))
        .parallel()
        .then(open_ticket.as_("ticket"))
        .then(page_oncall.as_("page"))
        .then(diagnose.as_("diagnosis"))
        .end_parallel()
        .when(acked)
        .then(wait_for_signal(ACK, timeout=ACK_TIMEOUT).as_(ACK))
        .then(acknowledge.as_("acknowledged").with_input(Output(ACK)))
        .else_when(quiet)
        .then(wait_for_signal(QUIET, timeout=QUIET_SECONDS).as_(QUIET))
        .end_when()
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
    if awaits_ack(run_id):
        common.add("acknowledged")
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
