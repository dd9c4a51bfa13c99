"""Group commit: many runs' step boundaries in one statement, each fenced on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from orchestrator import LeaseLostError
from orchestrator import events as ev
from orchestrator.appender import Appender
from orchestrator.store import Boundary, Claim, Projection, Store


class CountingStore(Store):
    """The real store, counting the statements (and their sizes) it is asked to write."""

    batches: list[int]

    async def append_many(self, boundaries: Sequence[Boundary], worker_id: str) -> set[str]:
        self.batches.append(len(boundaries))
        return await super().append_many(boundaries, worker_id)


async def _claimed(store: Store, n: int) -> list[Claim]:
    await store.register_flow("f", "q", "fp", [])
    for i in range(n):
        await store.start_run("f", {"i": i})
    await store.heartbeat("w", ["q"])
    return await store.claim("w", "q", ["f"], n)


def _step(path: str, attempt: int = 1) -> list[ev.Event]:
    return [
        ev.StepStarted(node_path=path, step=f"s{path}", attempt=attempt, node="n"),
        ev.StepCompleted(node_path=path, step=f"s{path}", attempt=attempt, output=path),
    ]


async def test_concurrent_boundaries_go_out_together_in_order(
    store: Store, pg: asyncpg.Connection
) -> None:
    claims = await _claimed(store, 20)
    counting = CountingStore(store.engine)
    counting.batches = []
    appender = Appender(counting, "w", max_in_flight=1)

    async def drive(c: Claim) -> None:
        seq = c.last_seq
        for k in range(3):
            batch = _step(str(k))
            await appender.append(
                Boundary(c.run_id, c.lease_token, seq, batch, Projection("running"))
            )
            seq += len(batch)

    await asyncio.gather(*(drive(c) for c in claims))

    # 60 boundaries, at most one statement in flight: the later ones queue and coalesce.
    assert sum(counting.batches) == 60
    assert len(counting.batches) < 60 and max(counting.batches) > 1
    rows = await pg.fetch("SELECT run_id::text, seq, step FROM run_events ORDER BY run_id, seq")
    by_run: dict[str, list[tuple[int, str | None]]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append((r["seq"], r["step"]))
    expected = [(1, None)] + [(2 + i, f"s{i // 2}") for i in range(6)]
    assert all(v == expected for v in by_run.values()) and len(by_run) == 20
    last = await pg.fetch("SELECT last_seq FROM flow_runs")
    assert {r["last_seq"] for r in last} == {7}
    checked, broken = await store.verify_chain()
    assert (checked, broken) == (140, [])


async def test_a_run_whose_fence_fails_fails_alone(store: Store, pg: asyncpg.Connection) -> None:
    a, b, c = await _claimed(store, 3)
    # b's lease moved on (say, recovered and claimed elsewhere); c's log end is stale.
    await pg.execute(
        "UPDATE flow_runs SET lease_token = lease_token + 100 WHERE run_id = $1", b.run_id
    )
    stale = Boundary(c.run_id, c.lease_token, c.last_seq + 5, _step("0"), Projection("running"))
    lost = await store.append_many(
        [
            Boundary(a.run_id, a.lease_token, a.last_seq, _step("0"), Projection("running")),
            Boundary(b.run_id, b.lease_token, b.last_seq, _step("0"), Projection("running")),
            stale,
        ],
        "w",
    )
    assert lost == {b.run_id, c.run_id}
    counts = dict(await pg.fetch("SELECT run_id::text, count(*) FROM run_events GROUP BY 1"))
    assert counts == {a.run_id: 3, b.run_id: 1, c.run_id: 1}

    appender = Appender(store, "w")
    with pytest.raises(LeaseLostError, match=b.run_id):
        await appender.append(
            Boundary(b.run_id, b.lease_token, 3, _step("1"), Projection("running"))
        )


async def test_a_seq_taken_behind_the_fence_fails_only_its_run(
    store: Store, pg: asyncpg.Connection
) -> None:
    a, b = await _claimed(store, 2)
    # An event written at b's next seq without moving flow_runs.last_seq: the batch's
    # insert hits the primary key, and the store retries the boundaries one by one.
    await pg.execute(
        "INSERT INTO run_events (run_id, seq, type, data) VALUES ($1, 2, 'run.resumed', "
        """'{"reason": "recovery"}')""",
        b.run_id,
    )
    lost = await store.append_many(
        [
            Boundary(a.run_id, a.lease_token, 1, _step("0"), Projection("running")),
            Boundary(b.run_id, b.lease_token, 1, _step("0"), Projection("running")),
        ],
        "w",
    )
    assert lost == {b.run_id}
    assert await pg.fetchval("SELECT last_seq FROM flow_runs WHERE run_id = $1", a.run_id) == 3
    assert await pg.fetchval("SELECT last_seq FROM flow_runs WHERE run_id = $1", b.run_id) == 1


async def test_a_database_error_reaches_every_waiter(store: Store) -> None:
    a, b = await _claimed(store, 2)

    class Broken(Store):
        async def append_many(self, boundaries: Sequence[Boundary], worker_id: str) -> set[str]:
            raise ConnectionResetError("database went away")

    appender = Appender(Broken(store.engine), "w")
    results = await asyncio.gather(
        *(
            appender.append(Boundary(c.run_id, c.lease_token, 1, _step("0"), Projection("running")))
            for c in (a, b)
        ),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [ConnectionResetError, ConnectionResetError]


async def test_drain_waits_for_every_boundary_handed_in(
    store: Store, pg: asyncpg.Connection
) -> None:
    claims = await _claimed(store, 5)
    appender = Appender(store, "w", max_in_flight=1)
    drivers = [
        asyncio.create_task(
            appender.append(Boundary(c.run_id, c.lease_token, 1, _step("0"), Projection("running")))
        )
        for c in claims
    ]
    await asyncio.sleep(0)  # handed in, not yet written
    for task in drivers[:2]:  # drivers stopped meanwhile: their boundaries still land
        task.cancel()
    await appender.drain()
    assert await pg.fetchval("SELECT count(*) FROM run_events") == 5 + 10
