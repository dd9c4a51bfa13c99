"""DBOS Transact: the same workflow as ``@DBOS.workflow`` over ``@DBOS.step`` functions.

Runs are enqueued on a DBOS queue from a ``DBOSClient`` in the phase process, the way a
separate webhook process would hand work to a DBOS worker. The parallel block is
``asyncio.gather`` over async steps: DBOS numbers a step when it is called, so the
order is deterministic on replay.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import asyncpg
from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions

from bench import workload as w
from bench.engines import ServeOptions, Span

# DBOS queues poll (default every 1 s); polled as often as Absurd's worker below so
# neither peer's latency is just its polling interval.
POLL_SECONDS = float(os.environ.get("BENCH_PEER_POLL", "0.05"))


async def _effect(step: str) -> None:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    await w.Effects.record(workflow_id, step)


@DBOS.step(name="parse")
async def parse(body: dict[str, Any]) -> dict[str, Any]:
    await _effect("parse")
    return w.parse(body)


@DBOS.step(name="create_ticket")
async def create_ticket(event: dict[str, Any]) -> dict[str, Any]:
    await _effect("create_ticket")
    return w.create_ticket(event)


@DBOS.step(name="notify_chat")
async def notify_chat(event: dict[str, Any]) -> dict[str, Any]:
    await _effect("notify_chat")
    return w.notify_chat(event)


@DBOS.step(name="run_diagnostics")
async def run_diagnostics(event: dict[str, Any]) -> dict[str, Any]:
    await _effect("run_diagnostics")
    return w.run_diagnostics(event)


@DBOS.step(name="add_ticket_comment")
async def add_ticket_comment(key: str, summary: str) -> dict[str, Any]:
    await _effect("add_ticket_comment")
    return w.add_ticket_comment(key, summary)


@DBOS.step(name="add_incident_note")
async def add_incident_note(event: dict[str, Any], summary: str) -> dict[str, Any]:
    await _effect("add_incident_note")
    return w.add_incident_note(event, summary)


@DBOS.step(name="execute_remediation")
async def execute_remediation(diagnostics: dict[str, Any]) -> dict[str, Any]:
    await _effect("execute_remediation")
    return w.execute_remediation(diagnostics)


@DBOS.step(name="resolve_incident")
async def resolve_incident(event: dict[str, Any]) -> dict[str, Any]:
    await _effect("resolve_incident")
    return w.resolve_incident(event)


@DBOS.step(name="transition_ticket")
async def transition_ticket(ticket: dict[str, Any]) -> dict[str, Any]:
    await _effect("transition_ticket")
    return w.transition_ticket(ticket)


@DBOS.workflow(name=w.FLOW)
async def incident_shape(body: dict[str, Any]) -> dict[str, Any]:
    event = await parse(body)
    ticket, _chat, diagnostics = await asyncio.gather(
        create_ticket(event), notify_chat(event), run_diagnostics(event)
    )
    await add_ticket_comment(ticket["key"], diagnostics["summary"])
    await add_incident_note(event, diagnostics["summary"])
    if not w.confident(diagnostics):
        return {"remediated": False}
    await execute_remediation(diagnostics)
    await resolve_incident(event)
    return await transition_ticket(ticket)


def serve(opts: ServeOptions) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await w.Effects.open(opts.url, opts.pool)
        config: DBOSConfig = {
            "name": "bench",
            "system_database_url": opts.url,
            "sys_db_pool_size": opts.pool,
            "executor_id": opts.worker_id,
            "application_version": "bench",
            "log_level": "WARNING",
        }
        DBOS(config=config)
        # Launched inside the running loop, so dequeued async workflows run on it too.
        DBOS.launch()
        await DBOS.register_queue_async(
            w.QUEUE, worker_concurrency=opts.concurrency, polling_interval_sec=POLL_SECONDS
        )
        opts.mark_ready()
        await stop.wait()
        DBOS.destroy(workflow_completion_timeout_sec=5)
        await w.Effects.close()

    asyncio.run(main())


class Driver:
    def __init__(self) -> None:
        self.client: DBOSClient | None = None
        self.options: EnqueueOptions = {"workflow_name": w.FLOW, "queue_name": w.QUEUE}

    async def prepare(self, url: str) -> None:
        """Nothing: DBOS creates its system tables when the worker launches."""

    async def open(self, url: str, starters: int) -> None:
        self.client = DBOSClient(system_database_url=url, system_database_pool_size=starters)

    async def start(self, body: dict[str, Any]) -> None:
        assert self.client is not None
        await self.client.enqueue_async(self.options, body)

    async def close(self) -> None:
        if self.client is not None:
            self.client.destroy()

    async def span(self, conn: asyncpg.Connection) -> Span:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'SUCCESS') done,
                      to_timestamp(min(created_at) / 1000.0) first,
                      to_timestamp(max(updated_at) FILTER (WHERE status = 'SUCCESS') / 1000.0)
                      last
                 FROM dbos.workflow_status WHERE name = $1""",
            w.FLOW,
        )
        assert row is not None
        return Span(row["done"], row["first"], row["last"])

    async def latencies(self, conn: asyncpg.Connection) -> list[float]:
        rows = await conn.fetch(
            """SELECT (updated_at - created_at) / 1000.0 s FROM dbos.workflow_status
                WHERE name = $1 AND status = 'SUCCESS'""",
            w.FLOW,
        )
        return [float(r["s"]) for r in rows]
