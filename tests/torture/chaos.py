"""The torture driver and its checks, shared by the short (CI) and long (``make torture``) runs.

Runs are started in waves, one before each kill, so every kill lands while runs are in
flight. A seeded chaos loop SIGKILLs one of two worker identities at a random moment and
restarts it either at once (the same identity reclaims its runs without waiting) or
after a delay (the other worker takes the runs over when the lease expires). Then every
invariant is checked from the database alone.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg

from orchestrator.state import fold
from orchestrator.store import Store
from tests.torture.flows import FLOW, QUEUE, expected_steps, torture_flow
from tests.torture.procs import TortureWorker

OUTCOMES = ("step.completed", "step.failed", "step.cancelled")


@dataclass
class Report:
    runs: int
    kills: int = 0
    delayed_restarts: int = 0
    seconds: float = 0.0
    resumed: int = 0
    retried_attempts: int = 0
    at_least_once: int = 0  # side effects of attempts killed before their outcome was logged
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.runs} runs, {self.kills} kills ({self.delayed_restarts} restarted late), "
            f"{self.resumed} run.resumed, {self.retried_attempts} failed attempts retried, "
            f"{self.at_least_once} at-least-once duplicate side effects, "
            f"{len(self.violations)} violations, {self.seconds:.1f}s"
        )


async def torture(
    database_url: str,
    store: Store,
    pg: asyncpg.Connection,
    *,
    runs: int,
    kills: int,
    seed: int,
    max_gap: float = 1.5,
    lease: float = 2.0,
    timeout: float = 120.0,
) -> Report:
    rng = random.Random(seed)
    report = Report(runs=runs)
    began = time.monotonic()
    definition = torture_flow().build()
    await store.register_flow(FLOW, QUEUE, definition.fingerprint, [])
    workers = [TortureWorker(database_url, f"torture-{k}", lease) for k in "ab"]
    late: dict[str, float] = {}  # worker id -> when to restart it
    started = 0
    try:
        for w in workers:
            w.start()
        for k in range(kills):
            wave = (runs - started) // (kills - k)
            for i in range(started, started + wave):
                severity = "critical" if i % 3 else "minor"
                await store.start_run(FLOW, {"title": f"incident {i}", "severity": severity})
            started += wave
            await _sleep_restarting(rng.uniform(0.1, max_gap), workers, late)
            if not any(w.alive for w in workers):  # both wait for a late restart
                _restart_late(workers, late, float("inf"))
            victim = rng.choice([w for w in workers if w.alive])
            victim.kill()
            report.kills += 1
            if rng.random() < 0.3:
                late[victim.worker_id] = time.monotonic() + rng.uniform(0.5, 1.5 * lease)
                report.delayed_restarts += 1
            else:
                victim.start()
        for w in workers:
            if not w.alive:
                w.start()
        late.clear()
        deadline = time.monotonic() + timeout
        while await pg.fetchval("SELECT count(*) FROM flow_runs WHERE status <> 'completed'"):
            if time.monotonic() > deadline:
                report.violations.append(f"runs still not completed after {timeout:g}s")
                break
            await asyncio.sleep(0.2)
    finally:
        for w in workers:
            w.stop()
    report.seconds = time.monotonic() - began
    await check(store, pg, report)
    return report


async def _sleep_restarting(
    seconds: float, workers: list[TortureWorker], late: dict[str, float]
) -> None:
    """Sleep, restarting the late workers whose moment has come."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        _restart_late(workers, late, now)
        await asyncio.sleep(min(0.05, end - now))


def _restart_late(workers: list[TortureWorker], late: dict[str, float], now: float) -> None:
    for w in workers:
        if w.worker_id in late and late[w.worker_id] <= now:
            del late[w.worker_id]
            w.start()


async def check(store: Store, pg: asyncpg.Connection, report: Report) -> None:
    bad = report.violations.append
    runs = await pg.fetch("SELECT run_id::text, status, last_seq, input FROM flow_runs")
    if len(runs) != report.runs:
        bad(f"{len(runs)} runs in flow_runs, {report.runs} started")
    for r in runs:
        if r["status"] != "completed":
            bad(f"run {r['run_id']} ended {r['status']}")
    for row in await pg.fetch(
        """SELECT run_id, node_path, type, count(*) n FROM run_events
            WHERE type IN ('step.completed', 'branch.decided', 'timer.fired',
                           'parallel.completed', 'run.completed')
            GROUP BY 1, 2, 3 HAVING count(*) > 1"""
    ):
        bad(f"run {row['run_id']}: {row['n']} {row['type']} at {row['node_path']}")
    for row in await pg.fetch(
        """SELECT run_id, min(seq) lo, max(seq) hi, count(*) n FROM run_events GROUP BY 1
           HAVING min(seq) <> 1 OR max(seq) <> count(*)"""
    ):
        bad(f"run {row['run_id']}: seq {row['lo']}..{row['hi']} holds {row['n']} events")
    await _check_side_effects(pg, runs, report)
    for r in runs:
        try:
            state = fold(await store.events(r["run_id"]), r["run_id"])
        except Exception as exc:
            bad(f"run {r['run_id']}: the log does not fold: {type(exc).__name__}: {exc}")
            continue
        if (state.phase, state.last_seq) != (r["status"], r["last_seq"]):
            bad(
                f"run {r['run_id']}: flow_runs says {r['status']}@{r['last_seq']}, "
                f"the log folds to {state.phase}@{state.last_seq}"
            )
    report.resumed = await pg.fetchval("SELECT count(*) FROM run_events WHERE type='run.resumed'")
    report.retried_attempts = await pg.fetchval(
        "SELECT count(*) FROM run_events WHERE type = 'step.failed'"
    )


async def _check_side_effects(
    pg: asyncpg.Connection, runs: list[asyncpg.Record], report: Report
) -> None:
    """One effect per completed step; extra ones only from attempts with no outcome."""
    bad = report.violations.append
    outcome = {
        (r["run_id"], r["step"], r["attempt"]): r["type"]
        for r in await pg.fetch(
            "SELECT run_id::text, step, attempt, type FROM run_events WHERE type = ANY($1)",
            list(OUTCOMES),
        )
    }
    started = {
        (r["run_id"], r["step"], r["attempt"])
        for r in await pg.fetch(
            "SELECT run_id::text, step, attempt FROM run_events WHERE type = 'step.started'"
        )
    }
    effects = Counter(
        {
            (r["run_id"], r["step"], r["attempt"]): r["n"]
            for r in await pg.fetch(
                "SELECT run_id::text, step, attempt, count(*) n FROM tests.side_effects"
                " GROUP BY 1, 2, 3"
            )
        }
    )
    for key, n in effects.items():
        kind = outcome.get(key)
        if key not in started:
            bad(f"side effect of an attempt that never started: {key}")
        elif kind is None:
            report.at_least_once += n
        elif kind != "step.completed" or n != 1:
            bad(f"{n} side effects of attempt {key} that ended {kind}")
    completed = {(run, step): a for (run, step, a), kind in outcome.items() if kind == OUTCOMES[0]}
    done: dict[str, set[str]] = defaultdict(set)
    for (run_id, step), attempt in completed.items():
        done[run_id].add(step)
        if not effects[(run_id, step, attempt)]:
            bad(f"run {run_id}: step {step} completed without its side effect")
    for r in runs:
        payload = json.loads(r["input"]) if isinstance(r["input"], str) else r["input"]
        must = expected_steps(r["run_id"], payload["severity"] == "critical")
        if done[r["run_id"]] != must:
            bad(
                f"run {r['run_id']}: completed {sorted(done[r['run_id']])}, expected {sorted(must)}"
            )
