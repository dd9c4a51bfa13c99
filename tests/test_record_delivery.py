"""``Store.record_delivery``: one statement stores a delivery with its runs and signals.

What the HTTP tests (test_webhooks.py) do not reach: the run.started event it writes is
the one ``start_run`` would, a signalled waiting run is woken and the listeners are
notified, a redelivery whose row was since deleted reuses its run, an unregistered flow
writes nothing, and identical deliveries racing on a small pool start one run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from orchestrator import UnknownFlowError
from orchestrator import events as ev
from orchestrator.database import asyncpg_dsn
from orchestrator.sql import NOTIFY_CHANNEL, SIGNAL_CHANNEL
from orchestrator.store import DeliveryResult, DeliveryTarget, Store

ROUTE = "/hooks/pd"
BODY = {"event": {"id": "E1", "event_type": "incident.acknowledged", "data": {"id": "P1"}}}


async def _register(store: Store, *flows: str) -> None:
    for flow in flows:
        await store.register_flow(flow, "q", f"fp-{flow}", {"triggers": []})


async def _deliver(
    store: Store,
    delivery: str,
    targets: list[DeliveryTarget],
    key: str | None = "P1",
    body: Any = BODY,
) -> DeliveryResult:
    return await store.record_delivery(
        route=ROUTE,
        delivery_id=delivery,
        headers={"X-Webhook-Id": delivery},
        body=body,
        verification="verified",
        correlation_key=key,
        targets=targets,
    )


async def test_runs_and_their_started_events(store: Store, pg: asyncpg.Connection) -> None:
    await _register(store, "a", "b")
    result = await _deliver(store, "d1", [DeliveryTarget("a"), DeliveryTarget("b")])
    assert not result.duplicate and result.signal_ids == []
    runs = [await store.get_run(r) for r in result.run_ids]
    assert [r.flow for r in runs] == ["a", "b"]  # in the targets' order
    for run in runs:
        assert (run.status, run.input, run.correlation_key) == ("pending", BODY, "P1")
        assert run.idempotency_key == f"webhook:{ROUTE}:d1"
        [started] = await store.events(run.run_id)
        expected = ev.RunStarted(
            flow=run.flow,
            fingerprint=f"fp-{run.flow}",
            input=BODY,
            correlation_key="P1",
            idempotency_key=f"webhook:{ROUTE}:d1",
            trigger="webhook",
        )
        assert started.model_dump(exclude=ev.COLUMNS) == expected.model_dump(exclude=ev.COLUMNS)
    row = await pg.fetchrow("SELECT * FROM webhook_deliveries")
    assert row is not None
    assert [str(r) for r in row["run_ids"]] == result.run_ids and row["id"] == result.delivery
    assert json.loads(row["body"]) == BODY and row["verification"] == "verified"
    assert await store.verify_chain() == (2, [])
    again = await _deliver(store, "d1", [DeliveryTarget("a"), DeliveryTarget("b")])
    assert again == DeliveryResult(result.delivery, True, result.run_ids, [])
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == 2


async def test_an_active_run_gets_a_signal_and_is_woken(
    store: Store, pg: asyncpg.Connection, database_url: str
) -> None:
    await _register(store, "incident", "audit")
    active, _ = await store.start_run("incident", {}, correlation_key="P1")
    await pg.execute("UPDATE flow_runs SET status = 'waiting', wake_at = NULL")
    heard: list[tuple[str, str]] = []
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    for channel in (NOTIFY_CHANNEL, SIGNAL_CHANNEL):
        await listener.add_listener(
            channel, lambda _c, _p, ch, payload: heard.append((ch, payload))
        )
    try:
        targets = [
            DeliveryTarget("incident", deliver_to_active=True, signal_name="ack"),
            DeliveryTarget("audit", deliver_to_active=True),  # no active run: a new run
        ]
        result = await _deliver(store, "d1", targets)
        await asyncio.sleep(0.3)
    finally:
        await listener.close()
    [signal_id] = result.signal_ids
    [audit_run] = result.run_ids
    assert (await store.get_run(audit_run)).flow == "audit"
    sig = await pg.fetchrow("SELECT * FROM signals WHERE id = $1", signal_id)
    assert sig is not None
    assert (str(sig["run_id"]), sig["name"], sig["correlation_key"], sig["sent_by"]) == (
        active,
        "ack",
        "P1",
        "webhook",
    )
    assert json.loads(sig["payload"]) == BODY
    assert sig["idempotency_key"] == f"webhook:{ROUTE}:d1:incident"
    assert await pg.fetchval("SELECT wake_at IS NOT NULL FROM flow_runs WHERE run_id = $1", active)
    assert (SIGNAL_CHANNEL, active) in heard and (NOTIFY_CHANNEL, "q") in heard
    # Without a correlation key there is no active run to deliver to: new runs.
    keyless = await _deliver(store, "d2", targets, key=None)
    assert len(keyless.run_ids) == 2 and keyless.signal_ids == []


async def test_a_redelivery_after_its_row_was_deleted_reuses_the_run_and_signal(
    store: Store, pg: asyncpg.Connection
) -> None:
    await _register(store, "incident", "audit")
    await store.start_run("incident", {}, correlation_key="P1")
    targets = [DeliveryTarget("incident", True, "ack"), DeliveryTarget("audit")]
    first = await _deliver(store, "d1", targets)
    await pg.execute("DELETE FROM webhook_deliveries")  # e.g. a retention job
    again = await _deliver(store, "d1", targets)
    assert not again.duplicate
    assert (again.run_ids, again.signal_ids) == (first.run_ids, first.signal_ids)
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == 2
    assert await pg.fetchval("SELECT count(*) FROM signals") == 1


async def test_an_unregistered_flow_writes_nothing(store: Store, pg: asyncpg.Connection) -> None:
    await _register(store, "a")
    with pytest.raises(UnknownFlowError, match=r"unknown flow 'gone'.*a"):
        await _deliver(store, "d1", [DeliveryTarget("a"), DeliveryTarget("gone")])
    for table in ("flow_runs", "run_events", "webhook_deliveries", "signals"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_identical_deliveries_racing_start_one_run(
    store: Store, pg: asyncpg.Connection
) -> None:
    """40 copies of each of 5 deliveries at once on a pool of 5: some copies find the
    first already stored, others wait on it mid-statement; all answer its runs."""
    await _register(store, "a", "b")
    targets = [DeliveryTarget("a"), DeliveryTarget("b")]
    ids = [f"d{i // 40}" for i in range(200)]  # copies of one id in flight together
    results = await asyncio.gather(*(_deliver(store, d, targets) for d in ids))
    for d in set(ids):
        mine = [r for i, r in zip(ids, results, strict=True) if i == d]
        assert sum(not r.duplicate for r in mine) == 1
        assert len({(r.delivery, tuple(r.run_ids)) for r in mine}) == 1
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == 10
    assert await pg.fetchval("SELECT count(*) FROM webhook_deliveries") == 5
