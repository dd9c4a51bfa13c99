"""Resolute: the incident-shape flow written with the public DSL, typed with pydantic."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg
from pydantic import BaseModel

from bench import workload as w
from bench.engines import ServeOptions, Span
from orchestrator import Client, Flow, FlowState, Output, StepContext, Worker, WorkerConfig, node


class Event(BaseModel):
    id: str
    title: str
    urgency: str
    service: str
    dedup_key: str
    url: str


class Ticket(BaseModel):
    key: str
    summary: str


class Diagnostics(BaseModel):
    confidence: float
    summary: str


class CommentInput(BaseModel):
    key: str
    summary: str


@node("parse")
async def parse(ctx: StepContext, body: dict[str, Any]) -> Event:
    await w.Effects.record(ctx.run_id, "parse")
    return Event(**w.parse(body))


@node("create_ticket")
async def create_ticket(ctx: StepContext, event: Event) -> Ticket:
    await w.Effects.record(ctx.run_id, "create_ticket")
    return Ticket(**w.create_ticket(event.model_dump()))


@node("notify_chat")
async def notify_chat(ctx: StepContext, event: Event) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "notify_chat")
    return w.notify_chat(event.model_dump())


@node("run_diagnostics")
async def run_diagnostics(ctx: StepContext, event: Event) -> Diagnostics:
    await w.Effects.record(ctx.run_id, "run_diagnostics")
    return Diagnostics(**w.run_diagnostics(event.model_dump()))


@node("add_ticket_comment")
async def add_ticket_comment(ctx: StepContext, inp: CommentInput) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "add_ticket_comment")
    return w.add_ticket_comment(inp.key, inp.summary)


@node("add_incident_note")
async def add_incident_note(ctx: StepContext, event: Event) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "add_incident_note")
    summary = ctx.state.get("diagnostics", Diagnostics).summary
    return w.add_incident_note(event.model_dump(), summary)


@node("execute_remediation")
async def execute_remediation(ctx: StepContext, diagnostics: Diagnostics) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "execute_remediation")
    return w.execute_remediation(diagnostics.model_dump())


@node("resolve_incident")
async def resolve_incident(ctx: StepContext, event: Event) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "resolve_incident")
    return w.resolve_incident(event.model_dump())


@node("transition_ticket")
async def transition_ticket(ctx: StepContext, ticket: Ticket) -> dict[str, Any]:
    await w.Effects.record(ctx.run_id, "transition_ticket")
    return w.transition_ticket(ticket.model_dump())


def confident(s: FlowState) -> bool:
    return w.confident(s.raw("diagnostics"))


def flow() -> Flow:
    return (
        Flow(w.FLOW, task_queue=w.QUEUE)
        .then(parse.as_("event"))
        .parallel()
        .then(create_ticket.as_("ticket"))
        .then(notify_chat.as_("chat"))
        .then(run_diagnostics.as_("diagnostics"))
        .end_parallel()
        .then(
            add_ticket_comment.as_("comment").with_input(
                key=Output("ticket.key"), summary=Output("diagnostics.summary")
            )
        )
        .then(add_incident_note.as_("note"))
        .when(confident)
        .then(execute_remediation.as_("remediation"))
        .then(resolve_incident.as_("resolution"))
        .then(transition_ticket.as_("transition"))
        .end_when()
    )


def serve(opts: ServeOptions) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await w.Effects.open(opts.url, opts.pool)
        worker = Worker(
            WorkerConfig(
                task_queue=w.QUEUE,
                database_url=opts.url,
                worker_id=opts.worker_id,
                max_concurrent=opts.concurrency,
                pool_size=opts.pool,
                lease_seconds=opts.lease,
                heartbeat_seconds=min(3.0, opts.lease / 3),
            )
        ).with_flow(flow())
        await worker.start()
        opts.mark_ready()
        await stop.wait()
        await worker.stop()
        await w.Effects.close()

    asyncio.run(main())


class Driver:
    def __init__(self) -> None:
        self.client: Client | None = None

    async def prepare(self, url: str) -> None:
        """Nothing: the worker migrates and registers the flow on start."""

    async def open(self, url: str, starters: int) -> None:
        self.client = Client(url, pool_size=starters)

    async def start(self, body: dict[str, Any]) -> None:
        assert self.client is not None
        await self.client.start(w.FLOW, body)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def span(self, conn: asyncpg.Connection) -> Span:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'completed') done, min(created_at) first,
                      max(completed_at) last FROM flow_runs"""
        )
        assert row is not None
        return Span(row["done"], row["first"], row["last"])

    async def latencies(self, conn: asyncpg.Connection) -> list[float]:
        rows = await conn.fetch(
            """SELECT extract(epoch FROM completed_at - created_at)::float8 s FROM flow_runs
                WHERE status = 'completed'"""
        )
        return [r["s"] for r in rows]
