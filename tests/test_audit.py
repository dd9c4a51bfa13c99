"""The hash chain shows any edit made behind the append-only trigger."""

from __future__ import annotations

import asyncpg
import pytest

from orchestrator import events as ev
from orchestrator.store import Projection, Store


async def _run_with_events(store: Store, n: int) -> str:
    await store.register_flow("f", "q", "fp", {"steps": [], "triggers": []})
    run_id, _ = await store.start_run("f", {"incident": "P1"}, correlation_key="P1")
    await store.heartbeat("w", ["q"])
    [claim] = await store.claim("w", "q", ["f"], 1)
    seq = 1
    for i in range(n):
        batch: list[ev.Event] = [
            ev.StepStarted(node_path=str(i), step=f"s{i}", attempt=1, node="n"),
            ev.StepCompleted(node_path=str(i), step=f"s{i}", attempt=1, output={"i": i}),
        ]
        await store.append(run_id, claim.lease_token, seq, batch, Projection("running"), "w")
        seq += 2
    return run_id


async def test_an_untouched_log_verifies(store: Store) -> None:
    run_id = await _run_with_events(store, 3)
    checked, broken = await store.verify_chain(run_id)
    assert checked == 7 and broken == []
    assert (await store.verify_chain())[1] == []


async def test_a_tampered_event_is_named(store: Store, pg: asyncpg.Connection) -> None:
    run_id = await _run_with_events(store, 3)
    other = await _run_with_events(store, 1)
    # A superuser lifts the append-only trigger and rewrites history.
    await pg.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
    await pg.execute(
        """UPDATE run_events SET data = jsonb_set(data, '{output,i}', '99')
            WHERE run_id = $1 AND seq = 5""",
        run_id,
    )
    await pg.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")
    checked, broken = await store.verify_chain()
    assert checked == 7 + 3
    assert [(b.run_id, b.seq, b.type) for b in broken] == [(run_id, 5, "step.completed")]
    assert "hash does not match" in broken[0].reason
    assert (await store.verify_chain(other))[1] == []


async def test_a_deleted_event_is_named(store: Store, pg: asyncpg.Connection) -> None:
    run_id = await _run_with_events(store, 2)
    await pg.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
    await pg.execute("DELETE FROM run_events WHERE run_id = $1 AND seq = 3", run_id)
    await pg.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")
    _, broken = await store.verify_chain(run_id)
    assert [(b.seq, b.reason) for b in broken] == [(4, "a gap or reordering in the sequence")]


async def test_events_cannot_skip_a_sequence_number(store: Store, pg: asyncpg.Connection) -> None:
    run_id = await _run_with_events(store, 0)
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="before event 2"):
        await pg.execute(
            "INSERT INTO run_events (run_id, seq, type) VALUES ($1, 3, 'run.completed')", run_id
        )
