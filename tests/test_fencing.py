"""Two writers, one run: the lease fence keeps the log consistent."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orchestrator import LeaseLostError
from orchestrator import events as ev
from orchestrator.store import Projection, Store
from tests.flows import CRITICAL, start_incidents
from tests.workers import WorkerProcess, wait_until


async def test_append_from_a_worker_that_lost_its_lease_is_refused(
    store: Store, pg: asyncpg.Connection
) -> None:
    await store.register_flow("f", "q", "fp", [])
    run_id, _ = await store.start_run("f", {})
    await store.heartbeat("old", ["q"])
    [old] = await store.claim("old", "q", ["f"], 10)
    started = ev.StepStarted(node_path="0", step="a", attempt=1, node="a")
    await store.append(run_id, old.lease_token, 1, [started], Projection("running"), "old")

    # The old worker stalls; its heartbeat goes stale; recovery frees the run.
    await pg.execute("UPDATE workers SET heartbeat_at = now() - interval '1 hour'")
    assert await store.recover_expired(15) == [run_id]
    await store.heartbeat("new", ["q"])
    [new] = await store.claim("new", "q", ["f"], 10)
    assert new.lease_token != old.lease_token and new.last_seq == 2

    done = ev.StepCompleted(node_path="0", step="a", attempt=1, output=1)
    with pytest.raises(LeaseLostError, match=f"run {run_id}: lease lost"):
        await store.append(run_id, old.lease_token, 2, [done], Projection("running"), "old")
    resumed = ev.RunResumed(reason="recovery")
    await store.append(run_id, new.lease_token, 2, [resumed, done], Projection("running"), "new")
    # A stale seq is refused too, even with the right token.
    with pytest.raises(LeaseLostError):
        await store.append(run_id, new.lease_token, 2, [done], Projection("running"), "new")
    rows = await pg.fetch("SELECT seq, worker_id FROM run_events ORDER BY seq")
    assert [(r["seq"], r["worker_id"]) for r in rows] == [
        (1, None),
        (2, "old"),
        (3, "new"),
        (4, "new"),
    ]


async def test_a_paused_worker_cannot_corrupt_a_run_taken_over(
    store: Store, pg: asyncpg.Connection, database_url: str
) -> None:
    run_ids = await start_incidents(store, 3, CRITICAL)
    # Long enough that the pause always lands while the steps are in flight, even on a
    # loaded machine.
    slow = {"RESOLUTE_TEST_SLEEP_DIAGNOSE": "5", "RESOLUTE_TEST_LEASE": "1.5"}
    paused = WorkerProcess(database_url, "paused", **slow)
    other = None
    try:
        await wait_until(
            pg,
            "SELECT count(*) = 3 FROM run_events"
            " WHERE type = 'step.started' AND step = 'diagnostics'",
        )
        paused.proc.send_signal(signal.SIGSTOP)  # a long GC pause, say
        other = WorkerProcess(database_url, "other", RESOLUTE_TEST_LEASE="1.5")
        await wait_until(pg, "SELECT bool_and(status = 'completed') FROM flow_runs", timeout=30)
        paused.proc.send_signal(signal.SIGCONT)  # wakes up, finishes its steps, tries to append
        await asyncio.sleep(6)  # its 5 s steps are over; a graceful stop flushes the rest
    finally:
        paused.stop()
        if other is not None:
            other.stop()
    dup = await pg.fetchval(
        "SELECT count(*) FROM (SELECT run_id, node_path FROM run_events"
        " WHERE type = 'step.completed' GROUP BY 1, 2 HAVING count(*) > 1) d"
    )
    assert dup == 0
    for run_id in run_ids:
        seqs = [
            r[0]
            for r in await pg.fetch(
                "SELECT seq FROM run_events WHERE run_id = $1 ORDER BY seq", run_id
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))
        writers = await pg.fetch(
            "SELECT DISTINCT worker_id FROM run_events WHERE run_id = $1"
            " AND type = 'step.completed' AND step = 'diagnostics'",
            run_id,
        )
        assert [w[0] for w in writers] == ["other"]


async def test_a_waiting_run_stays_claimable_when_its_new_owner_dies_at_once(
    store: Store, pg: asyncpg.Connection
) -> None:
    await store.register_flow("f", "q", "fp", [])
    run_id, _ = await store.start_run("f", {})
    await store.heartbeat("a", ["q"])
    [first] = await store.claim("a", "q", ["f"], 1)
    timer = ev.TimerStarted(node_path="0", step="t", fire_at=datetime.now(UTC))
    due = datetime.now(UTC) - timedelta(seconds=1)
    await store.append(
        run_id, first.lease_token, 1, [timer], Projection("waiting", wake_at=due, release=True), "a"
    )
    [again] = await store.claim("a", "q", ["f"], 1)  # woken by its timer...
    assert again.prior_status == "waiting"
    # ...and the worker is SIGKILLed before it appends anything.
    await pg.execute("UPDATE workers SET heartbeat_at = now() - interval '1 hour'")
    assert await store.recover_expired(15) == [run_id]
    await store.heartbeat("b", ["q"])
    assert [c.run_id for c in await store.claim("b", "q", ["f"], 1)] == [run_id]
