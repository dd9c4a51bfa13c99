"""``make demo``: the incident-response flows, live, on this machine.

Starts PostgreSQL (``RESOLUTE_DATABASE_URL``, else the embedded one under ./.resolute),
the vendor sandbox, the sample ``checkout-api`` and ``resolute serve`` with the five
flows; breaks the sample service twice and sends the PagerDuty webhooks those incidents
cause; prints what every flow does as the event log grows, then the timeline and
metrics read back from SQL and what landed in the fake Jira, Slack, PagerDuty and
Confluence. The service then keeps running for you to poke at (Ctrl-C stops it all).

``DEMO_ONCE=1`` exits after the story instead: status 0 only if every expected effect
happened, else 1 with the list of what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from rich.console import Console
from rich.markup import escape

from orchestrator.database import asyncpg_dsn, display_url, migrate, resolve_database_url

from .display import LogPrinter, print_metrics, print_sandbox, print_timelines
from .expectations import Facts, gather, missing_effects
from .launcher import Stack, running_stack
from .scenario import DemoIncidents, PagerDuty, play, until

__all__ = ["Outcome", "main", "run"]

ESCALATE_AFTER = 5.0  # seconds: the demo's stand-in for 15 minutes
SETTLE_TIMEOUT = 45.0  # how long the flows get to finish after the last webhook


@dataclass
class Outcome:
    missing: list[str] = field(default_factory=list)
    incidents: DemoIncidents | None = None
    facts: Facts | None = None


async def _continue_numbering(stack: Stack, pool: asyncpg.Pool) -> None:
    """The sandbox numbers incidents from 1 whenever it starts, but the database keeps
    earlier demos: skip the numbers already used, so an incident id (the correlation
    key) never names two incidents."""
    used = await pool.fetchval(
        r"SELECT max(substring(correlation_key FROM '^Q(\d+)$')::int) FROM flow_runs"
    )
    fake = stack.sandbox.fakes["pagerduty"]
    for _ in range(used or 0):
        fake.next_id()


async def _settle(stack: Stack, pool: asyncpg.Pool, incidents: DemoIncidents) -> Outcome:
    """Wait until every expected effect is there, or the time is up."""
    outcome = Outcome(incidents=incidents)

    async def done() -> bool:
        async with pool.acquire() as pg:
            outcome.facts = await gather(stack, pg, incidents)
        outcome.missing = missing_effects(outcome.facts, incidents)
        return not outcome.missing

    with contextlib.suppress(TimeoutError):
        await until(done, "every expected effect", timeout=SETTLE_TIMEOUT)
    return outcome


def _poke(console: Console, stack: Stack) -> None:
    url, auth = stack.service.url, f'-H "Authorization: Bearer {stack.api_token}"'
    console.rule("The service keeps running: poke at it (Ctrl-C stops everything)")
    console.print(
        f"curl -s {auth} '{url}/api/v1/runs?limit=20'\n"
        f"curl -s {auth} '{url}/api/v1/runs?correlation_key=<incident id>'\n"
        f"curl -s {auth} {url}/api/v1/runs/<run id>/events\n"
        f"curl -s {url}/metrics | grep resolute_incident\n"
        f"curl -s {stack.sample.url}/admin/state   # the sample service\n"
        f"curl -s {stack.sandbox.urls['jira']}/_sandbox/state   # the fake Jira (or slack, ...)\n"
        f"service log: {stack.service.log_path}",
        highlight=False,
        soft_wrap=True,
    )


async def run(*, once: bool, console: Console) -> Outcome:
    """The whole demo; returns what is missing (empty: everything happened)."""
    url = resolve_database_url(None)
    console.rule("Resolute: incident response")
    console.print(f"database: {display_url(url)}")
    await migrate(url)
    home = Path(os.environ.get("RESOLUTE_HOME", ".resolute"))
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=3)
    try:
        async with running_stack(
            url,
            escalate_after=ESCALATE_AFTER,
            log_path=home / "demo" / "service.log",
            port=int(os.environ.get("RESOLUTE_PORT", "8080")),
        ) as stack:
            await _continue_numbering(stack, pool)
            console.print(
                f"sandbox (fake PagerDuty, Jira, Slack, Confluence): {stack.sandbox.urls}\n"
                f"checkout-api (sample service): {stack.sample.url}\n"
                f"resolute serve {stack.service.url} (log: {stack.service.log_path})",
                highlight=False,
            )
            return await _story(stack, pool, console, once)
    finally:
        await pool.close()


async def _story(stack: Stack, pool: asyncpg.Pool, console: Console, once: bool) -> Outcome:
    printer = LogPrinter(pool, console, await pool.fetchval("SELECT now()"))

    async def say(text: str) -> None:
        await printer.poll()  # what happened so far first, then what happens next
        console.print(f"[bold yellow]»[/] {escape(text)}", highlight=False)

    watching = asyncio.create_task(printer.run())
    console.rule("What happens, as the event log records it")
    try:
        async with aiohttp.ClientSession() as http:
            incidents = await play(stack, PagerDuty(http, stack), say)
        outcome = await _settle(stack, pool, incidents)
    except TimeoutError as exc:
        outcome = Outcome(missing=[str(exc)])
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    await printer.poll()
    if outcome.incidents is not None:
        ids = [outcome.incidents.remediated["id"], outcome.incidents.escalated["id"]]
        console.rule("Read back from SQL")
        await print_timelines(console, pool, ids)
        await print_metrics(console, pool, ids)
    console.rule("What landed in the vendors (sandbox state)")
    print_sandbox(console, stack.sandbox.state(), stack.sample.state())
    if outcome.missing:
        console.rule("[red]Missing effects")
        for item in outcome.missing:
            console.print(f"[red]✘[/] {item}", highlight=False)
        console.print(f"service log: {stack.service.log_path}\n{stack.service.log_tail(15)}")
    else:
        console.print("[green]✔ every expected effect happened[/]")
    if not once:
        _poke(console, stack)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        console.print("stopping the service, the sample service and the sandbox")
    return outcome


def main() -> int:
    once = os.environ.get("DEMO_ONCE", "") not in ("", "0")
    console = Console()

    async def go() -> Outcome:
        # Ctrl-C and SIGTERM unwind the demo, which stops what it started.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await run(once=once, console=console)

    try:
        outcome = asyncio.run(go())
    except asyncio.CancelledError:
        console.print("stopped")
        return 130
    return 1 if outcome.missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
