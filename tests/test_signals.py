"""Signals: before and after the wait, timeouts, correlation keys, signal triggers,
signals sent by steps, exactly-once delivery into a run's log; retry of failed runs;
cron schedules fired by two workers at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from orchestrator import (
    Client,
    Flow,
    FlowState,
    NonRetryableError,
    Output,
    RetryPolicy,
    StepContext,
    Worker,
    WorkerConfig,
    correlated_output,
    node,
    schedule,
    signal,
    wait_for_signal,
)
from orchestrator import events as ev
from orchestrator.store import Boundary, Projection, Store
from tests.workers import wait_until


@node("slow-start")
async def slow_start(x: dict[str, Any]) -> str:
    await asyncio.sleep(0.5)
    return "started"


@node("escalate")
async def escalate(x: dict[str, Any]) -> str:
    return "escalated"


@node("announce")
async def announce(ctx: StepContext, x: dict[str, Any]) -> str:
    await ctx.emit_signal("incident.acknowledged", {"by": "bot"}, correlation_key="P-emit")
    return "sent"


@node("postmortem")
async def postmortem(x: dict[str, Any]) -> dict[str, Any]:
    return {"page": f"PM for {x['incident']}"}


FIXED = {"broken": True}


@node("fragile")
async def fragile(x: dict[str, Any]) -> str:
    if FIXED["broken"]:
        raise NonRetryableError("Jira said 400: priority 'P0' unknown")
    return "ok"


@node("open-ticket")
async def open_ticket(x: dict[str, Any]) -> dict[str, str]:
    return {"key": "OPS-7"}


@node("close-ticket")
async def close_ticket(ticket: dict[str, str]) -> str:
    return f"closed {ticket['key']}"


def not_acked(s: FlowState) -> bool:
    return not s.get("ack")["received"]


FLOWS = [
    Flow("ack-wait")
    .then(wait_for_signal("incident.acknowledged", timeout=1.0).as_("ack"))
    .when(not_acked)
    .then(escalate.as_("escalation"))
    .end_when(),
    Flow("late-wait")
    .then(slow_start.as_("first"))
    .then(wait_for_signal("go", timeout=30).as_("go")),
    Flow("twice")
    .then(wait_for_signal("go", timeout=30).as_("one"))
    .then(wait_for_signal("go", timeout=0.5).as_("two")),
    Flow("emitter").then(announce.as_("announce")),
    Flow("post-incident").triggered_by(signal("incident-resolved")).then(postmortem.as_("pm")),
    Flow("fragile").then(fragile.as_("f")),
    Flow("opened").then(open_ticket.as_("ticket")),
    Flow("resolved")
    .then(
        correlated_output(
            "ticket", flow="opened", retry=RetryPolicy(max_attempts=20, initial_interval=0.1)
        ).as_("ticket")
    )
    .then(close_ticket.as_("closed").with_input(Output("ticket"))),
    Flow("cron").triggered_by(schedule("* * * * *")).then(escalate.as_("tick")),
]


def _worker(url: str, name: str) -> Worker:
    cfg = WorkerConfig(
        task_queue="sig",
        database_url=url,
        worker_id=name,
        poll_seconds=0.1,
        hold_seconds=0.1,
        auto_migrate=False,
    )
    return Worker(cfg).with_flow(*FLOWS)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    w = _worker(database_url, "sig-1")
    await w.start()
    async with Client(database_url) as c:
        yield c
    await w.stop()


async def _waiting(client: Client, run_id: str) -> None:
    for _ in range(200):
        if "signal.waiting" in [e.type for e in await client.events(run_id)]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run never started waiting")


def _received(events: list[ev.Event]) -> list[ev.SignalReceived]:
    return [e for e in events if isinstance(e, ev.SignalReceived)]


async def test_signal_after_the_wait(client: Client) -> None:
    run_id = await client.start("ack-wait", {})
    await _waiting(client, run_id)
    await client.signal("incident.acknowledged", {"by": "alice"}, run_id=run_id)
    run = await client.wait(run_id, 10)
    assert run.status == "completed" and run.result == {
        "received": True,
        "payload": {"by": "alice"},
    }
    events = await client.events(run_id)
    assert [r.payload for r in _received(events)] == [{"by": "alice"}]
    assert "escalation" not in {e.step for e in events}


async def test_signal_before_the_wait_is_kept(client: Client) -> None:
    run_id = await client.start("late-wait", {})
    await client.signal("go", {"n": 1}, run_id=run_id)  # the run is still in its first step
    run = await client.wait(run_id, 10)
    assert run.status == "completed" and run.result == {"received": True, "payload": {"n": 1}}


async def test_wait_times_out(client: Client) -> None:
    run_id = await client.start("ack-wait", {})
    run = await client.wait(run_id, 10)
    assert run.status == "completed" and run.result == "escalated"
    types = [e.type for e in await client.events(run_id)]
    assert "signal.timed_out" in types and "signal.received" not in types


async def test_correlation_key_reaches_the_incidents_run(client: Client) -> None:
    other = await client.start("ack-wait", {}, correlation_key="P-other")
    run_id = await client.start("ack-wait", {}, correlation_key="P-123")
    await _waiting(client, run_id)
    await client.signal("incident.acknowledged", {"by": "bob"}, correlation_key="P-123")
    assert (await client.wait(run_id, 10)).result["payload"] == {"by": "bob"}
    assert (await client.wait(other, 10)).result == "escalated"


async def test_each_signal_is_delivered_once(client: Client) -> None:
    run_id = await client.start("twice", {}, correlation_key="P-9")
    await client.signal("go", {"n": 1}, correlation_key="P-9")
    run = await client.wait(run_id, 10)
    events = await client.events(run_id)
    assert [e.step for e in _received(events)] == ["one"]
    assert "signal.timed_out" in [e.type for e in events] and run.status == "completed"


async def test_a_step_can_send_a_signal(client: Client) -> None:
    waiting = await client.start("ack-wait", {}, correlation_key="P-emit")
    await client.start("emitter", {})
    run = await client.wait(waiting, 10)
    assert run.result == {"received": True, "payload": {"by": "bot"}}


async def test_signal_trigger_starts_a_flow_once(client: Client) -> None:
    sent = await client.signal(
        "incident-resolved", {"incident": "P-7"}, correlation_key="P-7", idempotency_key="r-7"
    )
    again = await client.signal(
        "incident-resolved", {"incident": "P-7"}, correlation_key="P-7", idempotency_key="r-7"
    )
    assert len(sent.started) == 1 and again.duplicate and again.started == []
    run = await client.wait(sent.started[0], 10)
    assert run.result == {"page": "PM for P-7"} and run.correlation_key == "P-7"


async def test_retry_a_failed_run_from_its_failed_step(client: Client) -> None:
    FIXED["broken"] = True
    run_id = await client.start("fragile", {})
    assert (await client.wait(run_id, 10)).status == "failed"
    assert not await client.retry(await client.start("ack-wait", {}))  # not failed: no-op
    FIXED["broken"] = False
    assert await client.retry(run_id)
    run = await client.wait(run_id, 10)
    assert run.status == "completed" and run.result == "ok" and run.error is None
    events = await client.events(run_id)
    attempts = [e.attempt for e in events if e.type == "step.started"]
    assert attempts == [1, 2]
    assert [e.type for e in events].count("run.resumed") == 1


async def test_a_later_run_reads_what_an_earlier_run_of_the_incident_recorded(
    client: Client,
) -> None:
    # The resolved event arrives first: it waits (retrying) until the ticket exists.
    resolved = await client.start("resolved", {}, correlation_key="P-55")
    await asyncio.sleep(0.3)
    await client.start("opened", {}, correlation_key="P-55")
    run = await client.wait(resolved, 15)
    assert run.status == "completed" and run.result == "closed OPS-7"
    failures = [e for e in await client.events(resolved) if isinstance(e, ev.StepFailed)]
    assert failures and all("no earlier run of P-55" in f.error for f in failures)
    # No correlation key: a clear, non-retryable failure.
    orphan = await client.wait(await client.start("resolved", {}), 10)
    assert orphan.status == "failed" and "has no correlation key" in (orphan.error or "")


async def test_two_schedulers_start_one_run_per_fire(
    database_url: str, pg: asyncpg.Connection
) -> None:
    workers = [_worker(database_url, "cron-a"), _worker(database_url, "cron-b")]
    for w in workers:
        await w.start()
    try:
        await wait_until(pg, "SELECT count(*) > 0 FROM flow_runs WHERE flow = 'cron'", timeout=70)
        await asyncio.sleep(2)
    finally:
        for w in workers:
            await w.stop()
    rows = await pg.fetch("SELECT idempotency_key, input FROM flow_runs WHERE flow = 'cron'")
    assert len(rows) == 1
    assert rows[0]["idempotency_key"].startswith("schedule:cron:")
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    assert rows[0]["idempotency_key"] <= f"schedule:cron:{minute.isoformat()}"


@pytest.mark.parametrize("by", ["run_id", "correlation_key"])
@pytest.mark.parametrize("hand_back", ["append", "release"])
async def test_a_signal_between_the_inbox_read_and_the_hand_back_wakes_the_run(
    store: Store, by: str, hand_back: str
) -> None:
    """The worker read the inbox (empty), a signal came while the run was still
    ``running``, then the worker handed the run back as waiting: it must be due now."""
    await store.register_flow("f", "q", "fp", [])
    signalled, _ = await store.start_run("f", {}, correlation_key="P-1")
    await store.start_run("f", {}, correlation_key="P-2")  # not signalled
    await store.heartbeat("w", ["q"])
    claims = {c.run_id: c for c in await store.claim("w", "q", ["f"], 2)}
    seen = {}
    for run_id in claims:
        seen[run_id], inbox = await store.inbox(run_id, ["P-1", "P-2"], ["ack"], [])
        assert inbox == []
    target: dict[str, Any] = {"run_id": signalled} if by == "run_id" else {"correlation_key": "P-1"}
    sent = await store.send_signal("ack", {"by": "amy"}, **target)
    assert sent.started == []

    deadline = datetime.now(UTC) + timedelta(hours=1)
    for run_id, claim in claims.items():
        if hand_back == "release":
            await store.release(run_id, claim.lease_token, "waiting", deadline, seen[run_id])
            continue
        wait = ev.SignalWaiting(node_path="0", step="ack", name="ack", timeout_at=deadline)
        projection = Projection("waiting", wake_at=deadline, release=True)
        boundary = Boundary(run_id, claim.lease_token, 1, [wait], projection, seen[run_id])
        assert await store.append_many([boundary], "w") == set()

    # Only the signalled run is due (the other waits for its deadline), and it finds
    # the signal in its inbox.
    [again] = await store.claim("w", "q", ["f"], 2)
    assert again.run_id == signalled and again.signal_version == seen[signalled] + 1
    _, inbox = await store.inbox(signalled, ["P-1"], ["ack"], [])
    assert [s.id for s in inbox] == [sent.signal_id]


async def test_a_signal_to_a_waits_own_key_wakes_the_run_out_of_memory(store: Store) -> None:
    """``wait_for_signal(correlate=...)`` under a key that is not the run's own."""
    await store.register_flow("f", "q", "fp", [])
    run_id, _ = await store.start_run("f", {}, correlation_key="P-1")
    await store.heartbeat("w", ["q"])
    [claim] = await store.claim("w", "q", ["f"], 1)
    deadline = datetime.now(UTC) + timedelta(hours=1)
    wait = ev.SignalWaiting(
        node_path="0", step="ack", name="ack", timeout_at=deadline, correlation_key="CHG-9"
    )
    projection = Projection("waiting", wake_at=deadline, release=True)
    boundary = Boundary(run_id, claim.lease_token, 1, [wait], projection, claim.signal_version)
    assert await store.append_many([boundary], "w") == set()
    assert await store.claim("w", "q", ["f"], 1) == []  # waiting for its deadline

    sent = await store.send_signal("ack", {"ok": True}, correlation_key="CHG-9")
    [again] = await store.claim("w", "q", ["f"], 1)
    assert again.run_id == run_id
    _, inbox = await store.inbox(run_id, ["CHG-9"], ["ack"], [])
    assert [s.id for s in inbox] == [sent.signal_id]
