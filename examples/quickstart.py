"""The smallest useful flow: run it with ``python -m examples.quickstart``.

With no RESOLUTE_DATABASE_URL it starts the embedded PostgreSQL under ./.resolute,
runs one incident through a worker in this process, and prints its event log.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from orchestrator import Client, Flow, Output, Worker, WorkerConfig, node, timer


class Incident(BaseModel):
    id: str
    title: str


@node("parse")
async def parse(payload: dict[str, str]) -> Incident:
    return Incident(id=payload["id"], title=payload["title"])


@node("open-ticket")
async def open_ticket(incident: Incident) -> str:
    return f"OPS-{incident.id}"


@node("announce")
async def announce(text: str) -> str:
    print(f"  [slack] {text}")
    return text


flow = (
    Flow("quickstart")
    .then(parse.as_("incident"))
    .then(open_ticket.as_("ticket"))
    .then(timer(seconds=1))
    .then(announce.as_("announced").with_input(Output("ticket")))
)


async def main() -> None:
    worker = Worker(WorkerConfig(task_queue="quickstart")).with_flow(flow)
    await worker.start()
    try:
        async with Client(worker.database_url) as client:
            run_id = await client.start("quickstart", {"id": "42", "title": "DB down"})
            run = await client.wait(run_id, timeout=30)
            print(f"run {run_id} {run.status}: result {run.result!r}")
            for e in await client.events(run_id):
                print(f"  {e.seq:>2} {e.type:<16} {e.step or ''}")
    finally:
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
