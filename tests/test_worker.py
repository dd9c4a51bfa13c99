"""End to end in one process: a flow with parallel, nested when and a timer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from orchestrator import Client, Worker, WorkerConfig
from tests.flows import CRITICAL, MINOR, close_pools, incident_flow


@pytest.fixture
async def worker(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    monkeypatch.setenv("RESOLUTE_DATABASE_URL", database_url)
    w = Worker(
        WorkerConfig(
            task_queue="test",
            database_url=database_url,
            worker_id="w-test",
            poll_seconds=0.1,
            hold_seconds=0.1,
            auto_migrate=False,
        )
    ).with_flow(incident_flow(timer_seconds=0.3))
    await w.start()
    yield w
    await w.stop()
    await close_pools()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with Client(database_url) as c:
        yield c


async def test_critical_incident_runs_every_branch(
    worker: Worker, client: Client, pg: asyncpg.Connection
) -> None:
    run_id = await client.start("incident", CRITICAL)
    run = await client.wait(run_id, timeout=20)
    assert run.status == "completed", run.error
    types = [(e.type, e.step) for e in await client.events(run_id)]
    assert types[0] == ("run.started", None)
    assert types[1] == ("step.started", "event")
    assert ("parallel.started", "parallel@1") in types
    started = [s for t, s in types if t == "step.started"]
    assert started == [
        "event",
        "ticket",
        "notified",
        "diagnostics",
        "commented",
        "remediation",
        "resolved",
    ]
    assert types[-1] == ("run.completed", None)
    assert run.result.startswith("resolved OPS-")
    comments = await pg.fetch("SELECT note FROM tests.side_effects WHERE step = 'commented'")
    assert comments[0]["note"].endswith(": db ok")


async def test_minor_incident_waits_on_a_durable_timer(
    worker: Worker, client: Client, pg: asyncpg.Connection
) -> None:
    run_id = await client.start("incident", MINOR)
    for _ in range(100):
        run = await client.get_run(run_id)
        if run.status == "waiting":
            break
        await asyncio.sleep(0.02)
    assert run.status == "waiting" and run.wake_at is not None
    assert run.lease_owner is None  # left memory while waiting
    run = await client.wait(run_id, timeout=20)
    assert run.status == "completed"
    types = [e.type for e in await client.events(run_id)]
    assert "timer.started" in types and "timer.fired" in types
    assert types.count("run.resumed") == 1
    branch = [e for e in await client.events(run_id) if e.type == "branch.decided"]
    assert [b.arm for b in branch] == [1]  # type: ignore[union-attr]


async def test_a_database_hiccup_mid_step_does_not_strand_the_run(
    database_url: str, client: Client, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESOLUTE_TEST_SLEEP_DIAGNOSE", "1")
    monkeypatch.setenv("RESOLUTE_DATABASE_URL", database_url)
    w = Worker(
        WorkerConfig(
            task_queue="test",
            database_url=database_url,
            worker_id="w-hiccup",
            poll_seconds=0.1,
            heartbeat_seconds=0.2,
            lease_seconds=60,  # recovery by lease expiry would take a minute: not the path
            auto_migrate=False,
        )
    ).with_flow(incident_flow())
    await w.start()
    try:
        run_id = await client.start("incident", CRITICAL)
        for _ in range(200):
            if await pg.fetchval(
                "SELECT count(*) FROM run_events WHERE step = 'diagnostics'"
                " AND type = 'step.started'"
            ):
                break
            await asyncio.sleep(0.02)
        # Every connection of the worker dies while the step runs.
        await pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        async with Client(database_url) as fresh:
            run = await fresh.wait(run_id, timeout=20)
    finally:
        await w.stop()
        await close_pools()
    assert run.status == "completed"
    dup = await pg.fetchval(
        "SELECT count(*) FROM (SELECT node_path FROM run_events WHERE type = 'step.completed'"
        " GROUP BY 1 HAVING count(*) > 1) d"
    )
    assert dup == 0
