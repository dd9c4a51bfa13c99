"""Crash recovery with real processes: SIGKILL mid-step, mid-parallel, mid-timer.

Every check reads the database: each step has exactly one ``step.completed``, only
the steps in flight at the kill are started again, nothing is lost.
"""

from __future__ import annotations

import time

import asyncpg
import pytest

from orchestrator.store import Store
from tests.flows import CRITICAL, MINOR, start_incidents
from tests.workers import WorkerProcess, wait_until

ALL_DONE = "SELECT count(*) = 0 FROM flow_runs WHERE status NOT IN ('completed')"


async def _in_flight(pg: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await pg.fetch(
        """SELECT s.run_id::text, s.node_path FROM run_events s
            WHERE s.type = 'step.started' AND NOT EXISTS (
                  SELECT 1 FROM run_events o WHERE o.run_id = s.run_id
                     AND o.node_path = s.node_path AND o.seq > s.seq
                     AND o.type IN ('step.completed', 'step.failed'))"""
    )
    return {(r[0], r[1]) for r in rows}


async def _check_exactly_once(pg: asyncpg.Connection, interrupted: set[tuple[str, str]]) -> None:
    assert await pg.fetchval("SELECT count(*) FROM flow_runs WHERE status <> 'completed'") == 0
    dup = await pg.fetch(
        """SELECT run_id, node_path, count(*) FROM run_events WHERE type = 'step.completed'
            GROUP BY 1, 2 HAVING count(*) <> 1"""
    )
    assert dup == []
    restarted = await pg.fetch(
        """SELECT run_id::text, node_path FROM run_events WHERE type = 'step.started'
            GROUP BY 1, 2 HAVING count(*) > 1"""
    )
    extra = {(r[0], r[1]) for r in restarted} - interrupted
    if extra:
        run = next(iter(extra))[0]
        rows = await pg.fetch(
            "SELECT seq, type, step, attempt, worker_id, recorded_at, data::text FROM run_events"
            " WHERE run_id = $1 ORDER BY seq",
            run,
        )
        print("\n".join(map(str, rows)))
    assert not extra
    gaps = await pg.fetchval(
        """SELECT count(*) FROM (SELECT run_id, max(seq) m, count(*) c FROM run_events
            GROUP BY run_id) x WHERE m <> c"""
    )
    assert gaps == 0
    stale = await pg.fetchval(
        """SELECT count(*) FROM flow_runs r WHERE last_seq <>
            (SELECT max(seq) FROM run_events e WHERE e.run_id = r.run_id)"""
    )
    assert stale == 0
    # Steps that completed before the kill ran exactly once.
    twice = await pg.fetch(
        """SELECT run_id::text, step FROM tests.side_effects GROUP BY 1, 2 HAVING count(*) > 1"""
    )
    aliases = {
        (r[0], r[1])
        for r in await pg.fetch(
            "SELECT DISTINCT run_id::text, step FROM run_events WHERE type = 'step.started'"
            " AND (run_id::text, node_path) = ANY(SELECT * FROM unnest($1::text[], $2::text[]))",
            [i[0] for i in interrupted],
            [i[1] for i in interrupted],
        )
    }
    assert {(r[0], r[1]) for r in twice} <= aliases


@pytest.mark.parametrize("restart_same_worker", [False, True], ids=["other-worker", "restarted"])
async def test_sigkill_mid_parallel_steps(
    store: Store, pg: asyncpg.Connection, database_url: str, restart_same_worker: bool
) -> None:
    await start_incidents(store, 12, CRITICAL)
    env = {"RESOLUTE_TEST_SLEEP_DIAGNOSE": "1.5", "RESOLUTE_TEST_LEASE": "2"}
    first = WorkerProcess(database_url, "crash-a", **env)
    try:
        await wait_until(
            pg,
            "SELECT count(*) >= 12 FROM run_events WHERE type = 'step.started'"
            " AND step = 'diagnostics'",
        )
        first.kill()
    finally:
        first.stop()
    interrupted = await _in_flight(pg)
    assert interrupted, "the kill should have interrupted steps"
    began = time.monotonic()
    env["RESOLUTE_TEST_SLEEP_DIAGNOSE"] = "0"
    if restart_same_worker:
        env["RESOLUTE_TEST_LEASE"] = "60"  # must not wait for the old lease
    second = WorkerProcess(database_url, "crash-a" if restart_same_worker else "crash-b", **env)
    try:
        await wait_until(pg, ALL_DONE, timeout=40)
    finally:
        second.stop()
    if restart_same_worker:
        assert time.monotonic() - began < 30  # resumed without waiting out the 60 s lease
    await _check_exactly_once(pg, interrupted)
    resumed = await pg.fetchval("SELECT count(*) FROM run_events WHERE type = 'run.resumed'")
    assert resumed >= 1


async def test_sigkill_while_runs_wait_on_timers(
    store: Store, pg: asyncpg.Connection, database_url: str
) -> None:
    await start_incidents(store, 8, MINOR)
    env = {"RESOLUTE_TEST_TIMER": "2", "RESOLUTE_TEST_LEASE": "2"}
    first = WorkerProcess(database_url, "timer-a", **env)
    try:
        await wait_until(
            pg,
            "SELECT count(*) = 8 FROM flow_runs WHERE status = 'waiting' AND wake_at IS NOT NULL",
        )
        first.kill()
    finally:
        first.stop()
    fire_at = await pg.fetchval("SELECT min(wake_at) FROM flow_runs")
    second = WorkerProcess(database_url, "timer-a", **env)
    try:
        await wait_until(pg, ALL_DONE, timeout=40)
    finally:
        second.stop()
    await _check_exactly_once(pg, set())
    fired = await pg.fetch(
        "SELECT run_id, count(*) c, min(recorded_at) at FROM run_events WHERE type = 'timer.fired'"
        " GROUP BY run_id"
    )
    assert len(fired) == 8 and all(r["c"] == 1 for r in fired)
    assert all(r["at"] >= fire_at for r in fired)  # woke at the right moment, not before
