"""Absurd: the same workflow as one task whose steps are ``ctx.step`` checkpoints.

The schema is the ``absurd.sql`` bundled in the ``absurdctl`` wheel, applied as is.
The parallel block is ``asyncio.gather`` over checkpointed steps; checkpoint names are
the step names, so replay does not depend on completion order.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from absurd_sdk import AsyncAbsurd, AsyncTaskContext
from absurdctl import BUNDLED_SCHEMA_SQL

from bench import workload as w
from bench.engines import ServeOptions, Span
from bench.engines.dbos_engine import POLL_SECONDS

JSON = dict[str, Any]


def _step(ctx: AsyncTaskContext, name: str, work: Callable[[], JSON]) -> Awaitable[JSON]:
    async def run() -> JSON:
        await w.Effects.record(str(ctx.task_id), name)
        return work()

    return ctx.step(name, run)


async def incident_shape(body: JSON, ctx: AsyncTaskContext) -> JSON:
    event = await _step(ctx, "parse", lambda: w.parse(body))
    ticket, _chat, diagnostics = await asyncio.gather(
        _step(ctx, "create_ticket", lambda: w.create_ticket(event)),
        _step(ctx, "notify_chat", lambda: w.notify_chat(event)),
        _step(ctx, "run_diagnostics", lambda: w.run_diagnostics(event)),
    )
    summary = diagnostics["summary"]
    await _step(ctx, "add_ticket_comment", lambda: w.add_ticket_comment(ticket["key"], summary))
    await _step(ctx, "add_incident_note", lambda: w.add_incident_note(event, summary))
    if not w.confident(diagnostics):
        return {"remediated": False}
    await _step(ctx, "execute_remediation", lambda: w.execute_remediation(diagnostics))
    await _step(ctx, "resolve_incident", lambda: w.resolve_incident(event))
    return await _step(ctx, "transition_ticket", lambda: w.transition_ticket(ticket))


def serve(opts: ServeOptions) -> None:
    async def main() -> None:
        await w.Effects.open(opts.url, opts.pool)
        app = AsyncAbsurd(opts.url, queue_name=w.QUEUE)
        app.register_task(w.FLOW)(incident_shape)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.stop_worker)
        opts.mark_ready()
        # A crashed worker's tasks come back when their claim expires: the claim
        # timeout plays the part of Resolute's lease.
        await app.start_worker(
            worker_id=opts.worker_id,
            claim_timeout=max(1, round(opts.lease)),
            concurrency=opts.concurrency,
            poll_interval=POLL_SECONDS,
        )
        await app.close()
        await w.Effects.close()

    asyncio.run(main())


class Driver:
    def __init__(self) -> None:
        self.clients: list[AsyncAbsurd] = []
        self.next: itertools.cycle[AsyncAbsurd] | None = None

    async def prepare(self, url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(BUNDLED_SCHEMA_SQL)
            await conn.execute("SELECT absurd.create_queue($1)", w.QUEUE)
        finally:
            await conn.close()

    async def open(self, url: str, starters: int) -> None:
        # One AsyncAbsurd holds one connection; several let spawns go in parallel.
        self.clients = [AsyncAbsurd(url, queue_name=w.QUEUE) for _ in range(starters)]
        self.next = itertools.cycle(self.clients)

    async def start(self, body: dict[str, Any]) -> None:
        assert self.next is not None
        await next(self.next).spawn(w.FLOW, body, queue=w.QUEUE)

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    async def span(self, conn: asyncpg.Connection) -> Span:
        row = await conn.fetchrow(
            f"""SELECT count(*) FILTER (WHERE t.state = 'completed') done,
                       min(t.enqueue_at) first,
                       max(r.completed_at) FILTER (WHERE t.state = 'completed') last
                  FROM absurd.t_{w.QUEUE} t
                  LEFT JOIN absurd.r_{w.QUEUE} r ON r.run_id = t.last_attempt_run"""
        )
        assert row is not None
        return Span(row["done"], row["first"], row["last"])

    async def latencies(self, conn: asyncpg.Connection) -> list[float]:
        rows = await conn.fetch(
            f"""SELECT extract(epoch FROM r.completed_at - t.enqueue_at)::float8 s
                  FROM absurd.t_{w.QUEUE} t JOIN absurd.r_{w.QUEUE} r
                    ON r.run_id = t.last_attempt_run
                 WHERE t.state = 'completed'"""
        )
        return [r["s"] for r in rows]
