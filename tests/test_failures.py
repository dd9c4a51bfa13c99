"""Bad input gives a clear, recorded error: raising nodes, wrong types, timeouts,
unknown flows, an unreachable database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from orchestrator import (
    Client,
    DatabaseUnavailableError,
    Flow,
    NonRetryableError,
    RetryPolicy,
    UnknownFlowError,
    Worker,
    WorkerConfig,
    node,
)
from orchestrator import events as ev

attempts: dict[str, int] = {}


@node("refuse")
async def refuse(x: dict[str, object]) -> str:
    raise NonRetryableError("the vendor said 400: project OPS does not exist")


@node("flaky", retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0))
async def flaky(x: dict[str, object]) -> str:
    raise ConnectionError("connection reset by peer")


@node("wrong-type")
async def wrong_type(x: dict[str, object]) -> int:
    return "not a number"  # type: ignore[return-value]


@node("nul")
async def nul(x: dict[str, object]) -> str:
    return "log line\x00with a NUL"


@node("slow", timeout=0.1, retry=RetryPolicy(max_attempts=1))
async def slow(x: dict[str, object]) -> str:
    await asyncio.sleep(5)
    return "late"


FLOWS = [
    Flow("refuse").then(refuse),
    Flow("flaky").then(flaky),
    Flow("wrong-type").then(wrong_type),
    Flow("slow").then(slow),
    Flow("nul").then(nul),
]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    w = Worker(
        WorkerConfig(
            task_queue="bad",
            database_url=database_url,
            poll_seconds=0.05,
            hold_seconds=0.5,
            auto_migrate=False,
        )
    ).with_flow(*FLOWS)
    await w.start()
    async with Client(database_url) as c:
        yield c
    await w.stop()


async def _fail(client: Client, flow: str) -> tuple[str, list[ev.Event]]:
    run_id = await client.start(flow, {})
    run = await client.wait(run_id, timeout=15)
    assert run.status == "failed"
    assert run.error
    return run.error, await client.events(run_id)


def _failures(events: list[ev.Event]) -> list[ev.StepFailed]:
    return [e for e in events if isinstance(e, ev.StepFailed)]


@pytest.mark.parametrize(
    ("flow", "error", "failures", "check"),
    [
        ("refuse", "project OPS does not exist", 1, lambda f: not f.retryable),
        ("flaky", "connection reset by peer", 2, lambda f: f.error_type == "ConnectionError"),
        ("wrong-type", "returned str, which does not match", 1, lambda f: not f.retryable),
        ("slow", "timed out after 0.1s", 1, lambda f: f.error_type == "StepTimeoutError"),
        ("nul", "NUL character", 1, lambda f: not f.retryable),
    ],
)
async def test_failing_steps_are_recorded(
    client: Client, flow: str, error: str, failures: int, check: Callable[[ev.StepFailed], bool]
) -> None:
    message, events = await _fail(client, flow)
    assert error in message
    recorded = _failures(events)
    assert len(recorded) == failures and all(check(f) for f in recorded)
    assert recorded[-1].next_attempt_at is None
    assert events[-1].type == "run.failed"


async def test_unknown_flow_names_the_known_ones(client: Client) -> None:
    known = r"unknown flow 'nope'.*Known flows: flaky, nul, refuse"
    with pytest.raises(UnknownFlowError, match=known):
        await client.start("nope", {})


async def test_idempotency_key_starts_one_run(client: Client) -> None:
    first = await client.start("refuse", {}, idempotency_key="incident-42")
    again = await client.start("refuse", {"other": 1}, idempotency_key="incident-42")
    assert first == again


async def test_cancel_fences_out_the_worker(client: Client) -> None:
    run_id = await client.start("slow", {})
    assert await client.cancel(run_id, "operator says stop")
    run = await client.wait(run_id, 5)
    assert run.status == "cancelled" and run.error == "operator says stop"
    assert not await client.cancel(run_id, "again")
    await asyncio.sleep(0.3)
    types = [e.type for e in await client.events(run_id)]
    assert types.count("run.cancelled") == 1 and types[-1] == "run.cancelled"


async def test_unreachable_database_at_startup() -> None:
    w = Worker(WorkerConfig(database_url="postgresql://nobody@127.0.0.1:1/none")).with_flow(
        FLOWS[0]
    )
    with pytest.raises(DatabaseUnavailableError, match=r"cannot reach PostgreSQL at .*:1/none"):
        await w.start()


def test_malformed_database_url() -> None:
    from orchestrator.errors import ConfigurationError

    w = Worker(WorkerConfig(database_url="mysql://x@y/z")).with_flow(FLOWS[0])
    with pytest.raises(ConfigurationError, match="postgresql://user:pass@host:port/db"):
        asyncio.run(w.start())


async def test_a_database_error_is_not_reported_as_an_unknown_run() -> None:
    """Right after a PostgreSQL restart, say: the caller must see the outage, not
    "run not found" (which tells an operator the run id is wrong)."""
    from orchestrator.database import create_engine
    from orchestrator.errors import RunNotFoundError
    from orchestrator.store import Store

    engine = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    store = Store(engine)
    try:
        with pytest.raises(RunNotFoundError):
            await store.get_run("not-a-uuid")
        with pytest.raises(Exception) as caught:
            await store.get_run("2441a68d-0000-4000-8000-000000000000")
        assert not isinstance(caught.value, RunNotFoundError)
    finally:
        await engine.dispose()
