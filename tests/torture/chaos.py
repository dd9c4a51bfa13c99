"""The torture driver and its checks, shared by the short (CI) and long (``make torture``) runs.

Runs are started in waves, one before each kill, so every kill lands while runs are in
flight. A seeded chaos loop SIGKILLs one of two worker identities at a random moment and
restarts it either at once (the same identity reclaims its runs without waiting) or
after a delay (the other worker takes the runs over when the lease expires). Meanwhile
it sends the ``ack`` signals the driver owes (see tests/torture/flows.py): some right
after the run starts (kept until the wait), some seconds later (after the wait, mostly),
some twice with the same idempotency key. Given a private ``cluster`` (the long run), it
also crashes PostgreSQL itself every 10-15 kills (``pg_ctl stop -m immediate``) and
starts it again, with the workers left running: they must ride it out. It does once
more after the last kill, so no later kill frees a run the crash stranded. Then every
invariant is checked from the database alone; the log and row of each run named in a
violation, and the chaos timeline, go to EVIDENCE.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from orchestrator.database import asyncpg_dsn, create_engine
from orchestrator.state import fold
from orchestrator.store import SignalResult, Store
from tests.torture.cluster import PrivateCluster
from tests.torture.flows import (
    ACK,
    FLOW,
    QUEUE,
    QUIET,
    awaits_ack,
    awaits_quiet,
    expected_steps,
    ride_out,
    self_acked,
    torture_flow,
)
from tests.torture.procs import LOGS, TortureWorker

OUTCOMES = ("step.completed", "step.failed", "step.cancelled")
TERMINAL = ("completed", "failed", "cancelled")
DRIVER = "torture-driver"  # signals.sent_by of the acks the driver sends
EVIDENCE = LOGS / "violations.txt"  # the log and row of each run named in a violation
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
T = TypeVar("T")


@dataclass
class Report:
    runs: int
    kills: int = 0
    delayed_restarts: int = 0
    pg_restarts: int = 0
    pg_down_seconds: float = 0.0
    seconds: float = 0.0
    resumed: int = 0
    retried_attempts: int = 0
    at_least_once: int = 0  # side effects of attempts killed before their outcome was logged
    acks: int = 0  # runs that wait for an ack
    senders: Counter[str] = field(default_factory=Counter)  # driver / self / peer
    signals_kept: int = 0  # rows in ``signals``
    delivered: int = 0  # signal.received events
    before_wait: int = 0  # acks kept before the run reached its wait
    resent: int = 0  # the driver's repeated sends answered "duplicate" with the same id
    re_emitted: int = 0  # emit_signal calls of re-run steps that sent nothing new
    timed_out: int = 0  # quiet waits that timed out (all of them, if all is well)
    worker_exits: int = 0  # worker processes that died without being killed
    violations: list[str] = field(default_factory=list)
    evidence: str = ""  # where the runs named in violations are written out

    def summary(self) -> str:
        senders = ", ".join(f"{n} by {who}" for who, n in sorted(self.senders.items()))
        return (
            f"{self.runs} runs, {self.kills} kills ({self.delayed_restarts} restarted late), "
            f"{self.pg_restarts} PostgreSQL restarts ({self.pg_down_seconds:.1f}s down), "
            f"{self.worker_exits} unexpected worker exits, "
            f"{self.resumed} run.resumed, {self.retried_attempts} failed attempts retried, "
            f"{self.at_least_once} at-least-once duplicate side effects; "
            f"signals: {self.acks} runs waiting for an ack, {self.signals_kept} sent "
            f"({senders}), {self.delivered} delivered ({self.before_wait} before the wait), "
            f"{self.resent} client re-sends and {self.re_emitted} step re-emissions "
            f"deduplicated, {self.timed_out} quiet waits timed out; "
            f"{len(self.violations)} violations, {self.seconds:.1f}s"
            + (f" (evidence: {self.evidence})" if self.evidence else "")
        )


async def prepare(database_url: str) -> None:
    """The tables the torture nodes record into, outside Resolute's schema."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS tests;"
            " CREATE TABLE IF NOT EXISTS tests.side_effects (run_id uuid, step text,"
            " attempt int, note text, at timestamptz DEFAULT clock_timestamp());"
            " CREATE TABLE IF NOT EXISTS tests.emissions (run_id uuid, target uuid,"
            " attempt int, signal_id bigint, at timestamptz DEFAULT clock_timestamp())"
        )
    finally:
        await conn.close()


async def torture(
    database_url: str,
    *,
    runs: int,
    kills: int,
    seed: int,
    max_gap: float = 1.5,
    lease: float = 2.0,
    timeout: float = 120.0,
    cluster: PrivateCluster | None = None,
) -> Report:
    """Run the torture against ``database_url``; with ``cluster`` (whose database that
    is) PostgreSQL is crashed and restarted too."""
    report = Report(runs=runs)
    engine = create_engine(database_url, pool_size=5)
    store = Store(engine)
    try:
        await prepare(database_url)
        driver = _Driver(database_url, store, report, seed, lease, cluster)
        began = time.monotonic()
        await driver.run(runs, kills, max_gap, timeout)
        report.seconds = time.monotonic() - began
        await engine.dispose()  # pooled connections may predate the last restart
        pg = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await check(store, pg, report, driver.sender)
            EVIDENCE.unlink(missing_ok=True)
            if report.violations:
                await _evidence(pg, report, driver.timeline)
        finally:
            await pg.close()
    finally:
        await engine.dispose()
    return report


class _Driver:
    def __init__(
        self,
        database_url: str,
        store: Store,
        report: Report,
        seed: int,
        lease: float,
        cluster: PrivateCluster | None,
    ) -> None:
        self.url = database_url
        self.store = store
        self.report = report
        self.rng = random.Random(seed)
        self.lease = lease
        self.cluster = cluster
        self.workers = [TortureWorker(database_url, f"torture-{k}", lease) for k in "ab"]
        self.late: dict[str, float] = {}  # worker id -> when to restart it
        self.sends: list[tuple[float, int, str, bool]] = []  # (due, n, run id, repeat): a heap
        self.order = itertools.count()
        self.sent: dict[str, SignalResult] = {}
        self.sender: dict[str, str] = {}  # run id -> who acks it: driver, self, run:<id>
        self.need_peer: list[str] = []  # runs whose ack a later run's step sends
        self.timeline: list[str] = []  # what the chaos did when (UTC, like the database)

    def note(self, what: str) -> None:
        self.timeline.append(f"{datetime.now(UTC).isoformat()} {what}")

    async def db(self, what: Callable[[], Awaitable[T]]) -> T:
        """A driver statement, retried while PostgreSQL restarts (all are idempotent)."""
        return await ride_out(lambda _: what())

    async def run(self, runs: int, kills: int, max_gap: float, timeout: float) -> None:
        rng, report = self.rng, self.report
        definition = torture_flow().build()
        await self.store.register_flow(FLOW, QUEUE, definition.fingerprint, [])
        pg_crash_at = set()
        if self.cluster is not None:
            k = rng.randint(4, 10)
            while k < kills:
                pg_crash_at.add(k)
                k += rng.randint(10, 15)
        started = 0
        try:
            for w in self.workers:
                w.start()
            for k in range(kills):
                wave = (runs - started) // (kills - k)
                for i in range(started, started + wave):
                    await self.start_run(i, last=i == runs - 1)
                started += wave
                gap = rng.uniform(0.1, max_gap)
                if k in pg_crash_at:
                    before = rng.uniform(0, gap)
                    await self.sleep(before)
                    await self.restart_postgres()
                    gap -= before
                await self.sleep(gap)
                if not any(w.alive for w in self.workers):  # both wait for a late restart
                    self.restart_late(float("inf"))
                victim = rng.choice([w for w in self.workers if w.alive])
                victim.kill()
                report.kills += 1
                if rng.random() < 0.3:
                    self.late[victim.worker_id] = time.monotonic() + rng.uniform(
                        0.5, 1.5 * self.lease
                    )
                    report.delayed_restarts += 1
                    self.note(f"SIGKILL {victim.worker_id}, restart later")
                else:
                    victim.start()
                    self.note(f"SIGKILL {victim.worker_id}, restarted")
            for w in self.workers:
                if not w.alive:
                    w.start()
            self.late.clear()
            while self.sends:  # the acks still owed
                await self.sleep(0.05)
            if self.cluster is not None:  # the last blow: no kill after it frees a stranded run
                await self.restart_postgres()
            await self.finish(timeout)
        finally:
            for w in self.workers:
                w.stop()

    async def finish(self, timeout: float, stall: float = 40.0) -> None:
        """Until every run is terminal; give up after ``timeout``, or after ``stall``
        seconds in which no run moved (longer than any wait's timeout), naming the runs."""
        deadline = time.monotonic() + timeout
        progress, moved = None, time.monotonic()
        while True:
            left = await self.fetchval(
                "SELECT json_agg(json_build_array(run_id, status, lease_owner, wake_at,"
                " last_seq)) FROM flow_runs WHERE status <> ALL($1)",
                list(TERMINAL),
            )
            if not left:
                return
            if left != progress:
                progress, moved = left, time.monotonic()
            now = time.monotonic()
            if now > deadline or now - moved > stall:
                rows = json.loads(left)
                self.report.violations.append(
                    f"{len(rows)} runs not terminal, none moved for {now - moved:.0f}s"
                    f" ({now - deadline + timeout:.0f}s after the chaos);"
                    " (run, status, lease owner, wake_at, last_seq): "
                    + "; ".join(str(r) for r in rows[:10])
                )
                return
            await self.sleep(0.5)

    async def start_run(self, i: int, *, last: bool) -> None:
        payload: dict[str, Any] = {
            "title": f"incident {i}",
            "severity": "critical" if i % 3 else "minor",
        }
        if self.need_peer:  # this run's page-oncall step acks an earlier run
            payload["ack_for"] = [self.need_peer.pop(0)]
        run_id, _ = await self.db(
            lambda: self.store.start_run(FLOW, payload, idempotency_key=f"torture-{i}")
        )
        if for_run := payload.get("ack_for"):
            self.sender[for_run[0]] = f"run:{run_id}"
        if not awaits_ack(run_id):
            return
        rng = self.rng
        if self_acked(run_id):
            self.sender[run_id] = f"run:{run_id}"
        elif rng.random() < 0.3 and not last:
            self.need_peer.append(run_id)
        else:
            self.owe(run_id)

    def owe(self, run_id: str) -> None:
        """Schedule the driver's ack: at once (before the wait) or within 3 s, maybe twice."""
        rng, now = self.rng, time.monotonic()
        self.sender[run_id] = DRIVER
        due = now if rng.random() < 0.3 else now + rng.uniform(0.2, 3.0)
        heapq.heappush(self.sends, (due, next(self.order), run_id, False))
        if rng.random() < 0.25:  # a client that retries its request
            again = due + rng.uniform(0.0, 2.0)
            heapq.heappush(self.sends, (again, next(self.order), run_id, True))

    async def send_due(self, now: float) -> None:
        while self.sends and self.sends[0][0] <= now:
            _, _, run_id, repeat = heapq.heappop(self.sends)
            sent = await self.db(
                lambda run_id=run_id: self.store.send_signal(
                    ACK,
                    {"for": run_id, "by": DRIVER},
                    run_id=run_id,
                    idempotency_key=f"torture-ack:{run_id}",
                    sent_by=DRIVER,
                )
            )
            if not repeat:
                self.sent[run_id] = sent
            elif sent.duplicate and sent.signal_id == self.sent[run_id].signal_id:
                self.report.resent += 1
            else:
                self.report.violations.append(
                    f"run {run_id}: re-sending its ack (same idempotency key) gave {sent}, "
                    f"the first send {self.sent[run_id]}"
                )

    async def fetchval(self, query: str, *args: Any) -> Any:
        async def once() -> Any:
            conn = await asyncpg.connect(asyncpg_dsn(self.url))
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        return await self.db(once)

    async def sleep(self, seconds: float) -> None:
        """Sleep, restarting the late workers whose moment has come and sending the acks
        that are due; a worker that died without being killed is restarted and reported."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            self.restart_late(now)
            for w in self.workers:
                if not w.alive and w.worker_id not in self.late:
                    self.report.worker_exits += 1
                    self.report.violations.append(
                        f"worker {w.worker_id} exited by itself ({w.describe_exit()})"
                    )
                    w.start()
                    self.note(f"{w.worker_id} had exited by itself: restarted")
            await self.send_due(now)
            if now >= end:
                return
            await asyncio.sleep(min(0.05, end - now))

    def restart_late(self, now: float) -> None:
        for w in self.workers:
            if w.worker_id in self.late and self.late[w.worker_id] <= now:
                del self.late[w.worker_id]
                w.start()
                self.note(f"late restart of {w.worker_id}")

    async def restart_postgres(self) -> None:
        """Crash PostgreSQL under running workers and start it again after a pause."""
        assert self.cluster is not None
        await self.workers_up()
        down = self.rng.uniform(0.2, 2.0)
        began = time.monotonic()
        self.note("PostgreSQL: stop -m immediate")
        await asyncio.to_thread(self.cluster.crash)
        self.note("PostgreSQL: down")
        await asyncio.sleep(down)
        await asyncio.to_thread(self.cluster.start)
        self.note("PostgreSQL: up again")
        self.report.pg_restarts += 1
        self.report.pg_down_seconds += time.monotonic() - began

    async def workers_up(self, settle: float = 1.0, timeout: float = 20.0) -> None:
        """Until every live worker process has heartbeated and started a while ago, so
        the crash hits running workers (one that cannot reach the database at startup
        exits by design)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [w for w in self.workers if w.alive]
            pids = {w.proc.pid for w in live if w.proc is not None}
            up = await self.fetchval(
                "SELECT count(*) FROM workers WHERE pid = ANY($1::int[])", sorted(pids)
            )
            if up == len(live) and all(w.uptime >= settle for w in live):
                return
            await self.sleep(0.1)


async def check(
    store: Store, pg: asyncpg.Connection, report: Report, sender: dict[str, str]
) -> None:
    bad = report.violations.append
    runs = await pg.fetch("SELECT run_id::text, status, last_seq, input FROM flow_runs")
    if len(runs) != report.runs:
        bad(f"{len(runs)} runs in flow_runs, {report.runs} started")
    for r in runs:
        if r["status"] != "completed":
            bad(f"run {r['run_id']} ended {r['status']}")
    for row in await pg.fetch(
        """SELECT run_id, node_path, type, count(*) n FROM run_events
            WHERE type IN ('step.completed', 'branch.decided', 'timer.started', 'timer.fired',
                           'parallel.completed', 'run.completed', 'signal.waiting',
                           'signal.received', 'signal.timed_out')
            GROUP BY 1, 2, 3 HAVING count(*) > 1"""
    ):
        bad(f"run {row['run_id']}: {row['n']} {row['type']} at {row['node_path']}")
    for row in await pg.fetch(
        """SELECT run_id, min(seq) lo, max(seq) hi, count(*) n FROM run_events GROUP BY 1
           HAVING min(seq) <> 1 OR max(seq) <> count(*)"""
    ):
        bad(f"run {row['run_id']}: seq {row['lo']}..{row['hi']} holds {row['n']} events")
    await _check_side_effects(pg, runs, report)
    await _check_signals(pg, [r["run_id"] for r in runs], report, sender)
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


async def _check_signals(
    pg: asyncpg.Connection, run_ids: list[str], report: Report, sender: dict[str, str]
) -> None:
    """Each run that waits for an ack had exactly one kept for it, by the expected sender,
    received exactly once (and no signal twice anywhere); quiet waits timed out; a step
    re-run re-emitting its signal got the same signal back."""
    bad = report.violations.append
    signals = await pg.fetch(
        "SELECT id, name, run_id::text, payload, sent_by, sent_at FROM signals ORDER BY id"
    )
    report.signals_kept = len(signals)
    by_run: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for s in signals:
        by_run[s["run_id"]].append(s)
        payload = json.loads(s["payload"]) if isinstance(s["payload"], str) else s["payload"]
        if s["name"] != ACK or payload.get("for") != s["run_id"]:
            bad(f"signal {s['id']} {s['name']} for run {s['run_id']} with {payload}: not sent")
    events: dict[str, dict[str, list[asyncpg.Record]]] = defaultdict(lambda: defaultdict(list))
    for e in await pg.fetch(
        "SELECT run_id::text, type, step, (data->>'signal_id')::bigint signal_id, recorded_at,"
        " (data->>'timeout_at')::timestamptz timeout_at"
        " FROM run_events WHERE type LIKE 'signal.%' ORDER BY run_id, seq"
    ):
        events[e["run_id"]][e["type"]].append(e)
    received = Counter(e["signal_id"] for per in events.values() for e in per["signal.received"])
    for signal_id, n in received.items():
        if n > 1 or signal_id is None:
            bad(f"signal {signal_id} received {n} times")
    report.delivered = sum(received.values())
    for run_id in run_ids:
        ev = events.get(run_id, {})
        kinds = {t: len(es) for t, es in ev.items() if es}
        if awaits_ack(run_id):
            report.acks += 1
            who = sender.get(run_id)
            own = who == f"run:{run_id}"
            report.senders["the driver" if who == DRIVER else "itself" if own else "a peer"] += 1
            kept = by_run.get(run_id, [])
            if len(kept) != 1 or kept[0]["sent_by"] != who:
                sent = [(s["id"], s["sent_by"]) for s in kept]
                bad(f"run {run_id}: ack signals kept {sent}, expected one sent by {who}")
            if kinds != {"signal.waiting": 1, "signal.received": 1}:
                bad(f"run {run_id}: waiting for its ack, logged {kinds}; {_timing(kept, ev)}")
                continue
            got = ev["signal.received"][0]["signal_id"]
            if not kept or got != kept[0]["id"]:
                bad(f"run {run_id}: received signal {got}, its ack is {kept and kept[0]['id']}")
                continue
            if kept[0]["sent_at"] < ev["signal.waiting"][0]["recorded_at"]:
                report.before_wait += 1
        elif awaits_quiet(run_id):
            if kinds != {"signal.waiting": 1, "signal.timed_out": 1}:
                bad(f"run {run_id}: waiting for {QUIET}, logged {kinds}")
            report.timed_out += kinds.get("signal.timed_out", 0)
            if by_run.get(run_id):
                bad(f"run {run_id}: signals {[s['id'] for s in by_run[run_id]]} kept, none sent")
        elif kinds or by_run.get(run_id):
            bad(f"run {run_id} waits for no signal, yet logged {kinds}, kept {by_run.get(run_id)}")
    ids = {s["run_id"]: s["id"] for s in signals}
    calls: dict[tuple[str, str], set[int]] = defaultdict(set)
    n_calls = 0
    for row in await pg.fetch("SELECT run_id::text, target::text, signal_id FROM tests.emissions"):
        calls[(row["run_id"], row["target"])].add(row["signal_id"])
        n_calls += 1
    for (emitter, target), got in calls.items():
        if got != {ids.get(target)} or sender.get(target) != f"run:{emitter}":
            bad(
                f"run {emitter}: emit_signal to {target} returned signals {sorted(got)}; kept: "
                f"{ids.get(target)}, sender expected: {sender.get(target)}"
            )
    report.re_emitted = n_calls - len(calls)


def _timing(kept: list[asyncpg.Record], ev: dict[str, list[asyncpg.Record]]) -> str:
    """When the ack was kept against when the run began waiting and stopped waiting."""
    if not kept or not ev.get("signal.waiting"):
        return f"signals kept: {[s['id'] for s in kept]}"
    waiting = ev["signal.waiting"][0]
    lag = (kept[0]["sent_at"] - waiting["recorded_at"]).total_seconds() * 1000
    ended = [f"{t} at {e[0]['recorded_at']}" for t, e in ev.items() if t != "signal.waiting" and e]
    return (
        f"signal {kept[0]['id']} kept at {kept[0]['sent_at']} ({lag:+.1f} ms against "
        f"signal.waiting at {waiting['recorded_at']}, deadline {waiting['timeout_at']}), "
        f"then {', '.join(ended) or 'nothing'}"
    )


async def _evidence(pg: asyncpg.Connection, report: Report, timeline: list[str]) -> None:
    """Write the log, ``flow_runs`` row and signals of the runs named in violations (the
    first ten) and the chaos timeline to EVIDENCE, which the summary names."""
    named = list(dict.fromkeys(m for v in report.violations for m in _UUID.findall(v)))[:10]
    out = [report.summary(), "", *report.violations, ""]
    for run_id in named:
        row = await pg.fetchrow("SELECT * FROM flow_runs WHERE run_id = $1::uuid", run_id)
        out += [f"=== run {run_id}", f"flow_runs: {dict(row) if row else None}"]
        for s in await pg.fetch(
            "SELECT * FROM signals WHERE run_id = $1::uuid ORDER BY id", run_id
        ):
            out.append(f"signal: {dict(s)}")
        for e in await pg.fetch(
            "SELECT seq, recorded_at, worker_id, type, node_path, step, attempt, data::text"
            " FROM run_events WHERE run_id = $1::uuid ORDER BY seq",
            run_id,
        ):
            out.append(" | ".join(str(v) for v in e.values()))
        out.append("")
    out += ["=== chaos timeline", *timeline]
    EVIDENCE.write_text("\n".join(out) + "\n")
    report.evidence = str(EVIDENCE)
