"""``resolute``: run workers, migrate, inspect and steer runs from a terminal."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .client import Client
from .database import display_url, migrate_sync, resolve_database_url
from .errors import ResoluteError
from .interpreter import check_compatible, decide
from .logs import configure_logging
from .state import fold
from .worker import Worker

__all__ = ["app", "load_target", "main"]

app = typer.Typer(
    help="Resolute: durable incident-response flows on PostgreSQL.", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="RESOLUTE_DATABASE_URL",
        help="postgresql://user:pass@host:port/db (default: the embedded database)",
        show_envvar=True,
    ),
]


def load_target(spec: str) -> Any:
    """Import ``package.module:attr``; call ``attr`` if it is a factory function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise typer.BadParameter(f"expected MODULE:ATTR, got {spec!r}")
    sys.path.insert(0, ".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {spec!r}: {exc}") from exc
    if callable(obj) and not isinstance(obj, Worker):
        obj = obj()
    return obj


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro())  # type: ignore[arg-type]
    except ResoluteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _client(url: str | None) -> Client:
    return Client(url)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


@app.command()
def worker(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTR of a Worker (or a function returning one)")
    ],
    database_url: DatabaseOpt = None,
    log_format: Annotated[str, typer.Option(envvar="RESOLUTE_LOG_FORMAT")] = "text",
    log_level: Annotated[str, typer.Option(envvar="RESOLUTE_LOG_LEVEL")] = "INFO",
) -> None:
    """Run a worker until SIGINT/SIGTERM."""
    configure_logging(log_level, log_format)
    w = load_target(target)
    if not isinstance(w, Worker):
        raise typer.BadParameter(f"{target} is a {type(w).__name__}, not a Worker")
    if database_url and w.config.database_url is None:
        from dataclasses import replace

        w.config = replace(w.config, database_url=database_url)
    try:
        w.run()
    except ResoluteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseOpt = None) -> None:
    """Apply pending migrations."""
    try:
        url = resolve_database_url(database_url)
        migrate_sync(url)
    except ResoluteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"database at {display_url(url)} is up to date")


@runs_app.command("list")
def runs_list(
    database_url: DatabaseOpt = None,
    flow: Annotated[str | None, typer.Option(help="only this flow")] = None,
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    correlation_key: Annotated[str | None, typer.Option(help="only this incident")] = None,
    limit: int = 50,
) -> None:
    """The newest runs."""

    async def go() -> None:
        async with _client(database_url) as c:
            rows = await c.list_runs(
                flow=flow, status=status, correlation_key=correlation_key, limit=limit
            )
        table = Table("run", "flow", "status", "correlation", "created", "ended")
        for r in rows:
            table.add_row(
                r.run_id,
                r.flow,
                r.status,
                r.correlation_key or "",
                _when(r.created_at),
                _when(r.completed_at),
            )
        out.print(table)

    _run(go)


@runs_app.command("show")
def runs_show(run_id: str, database_url: DatabaseOpt = None) -> None:
    """One run's row."""

    async def go() -> None:
        async with _client(database_url) as c:
            run = await c.get_run(run_id)
        out.print_json(run.model_dump_json())

    _run(go)


@runs_app.command("events")
def runs_events(
    run_id: str,
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """A run's event log, in order."""

    async def go() -> None:
        async with _client(database_url) as c:
            events = await c.events(run_id)
        if as_json:
            for e in events:
                out.print(e.model_dump_json(), markup=False, highlight=False)
            return
        table = Table("seq", "time", "type", "step", "attempt", "worker", "data")
        for e in events:
            data = e.model_dump(
                mode="json",
                exclude={"type", "seq", "recorded_at", "node_path", "step", "attempt", "worker_id"},
            )
            table.add_row(
                str(e.seq),
                _when(e.recorded_at),
                e.type,
                e.step or "",
                str(e.attempt or ""),
                e.worker_id or "",
                json.dumps(data)[:120],
            )
        out.print(table)

    _run(go)


@app.command()
def trigger(
    flow: str,
    input: Annotated[str, typer.Option(help="the run's input as JSON")] = "{}",
    idempotency_key: str | None = None,
    correlation_key: str | None = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Start a run of FLOW (manual trigger)."""
    try:
        payload = json.loads(input)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--input is not valid JSON: {exc}") from exc

    async def go() -> None:
        async with _client(database_url) as c:
            run_id = await c.start(
                flow, payload, idempotency_key=idempotency_key, correlation_key=correlation_key
            )
        out.print(run_id)

    _run(go)


@app.command()
def cancel(
    run_id: str,
    reason: Annotated[
        str, typer.Option(help="recorded in run.cancelled")
    ] = "cancelled by operator",
    database_url: DatabaseOpt = None,
) -> None:
    """Cancel a run that has not ended."""

    async def go() -> None:
        async with _client(database_url) as c:
            done = await c.cancel(run_id, reason, by="cli")
        out.print("cancelled" if done else "the run had already ended; nothing to cancel")

    _run(go)


@app.command()
def replay(
    run_id: str,
    flow: Annotated[
        str | None,
        typer.Option(help="MODULE:ATTR of the Flow/Worker, to check the log and show what is next"),
    ] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Rebuild a run's state from its log, offline, and print it."""

    async def go() -> None:
        async with _client(database_url) as c:
            events = await c.events(run_id)
        state = fold(events, run_id)
        shown = {
            "run_id": state.run_id,
            "flow": state.flow,
            "status": state.status,
            "last_seq": state.last_seq,
            "input": state.input,
            "outputs": state.outputs,
            "steps": {
                p: {"alias": r.alias, "status": r.status, "attempt": r.attempt, "error": r.error}
                for p, r in state.steps.items()
            },
            "branches": state.branches,
            "timers": {
                p: {"fire_at": t.fire_at.isoformat(), "fired": t.fired}
                for p, t in state.timers.items()
            },
            "signals": [s.name for s in state.signals],
            "result": state.result,
            "error": state.error,
        }
        if flow is not None:
            target = load_target(flow)
            definitions = target.flows if isinstance(target, Worker) else {state.flow: target}
            definition = definitions[state.flow]
            definition = definition.build() if hasattr(definition, "build") else definition
            check_compatible(definition, state)
            nxt = decide(definition, state, datetime.now(UTC))
            shown["next"] = {
                "events": [e.type + (f" {e.step}" if e.step else "") for e in nxt.events],
                "execute": [x.step.alias for x in nxt.execute],
                "wake_at": nxt.wake_at.isoformat() if nxt.wake_at else None,
            }
        out.print_json(json.dumps(shown, default=str))

    _run(go)


@app.command()
def sandbox() -> None:
    """Start the fake PagerDuty/Jira/Slack/Confluence APIs on loopback ports."""
    from providers.sandbox import main as sandbox_main

    sandbox_main()


def main() -> None:
    app()
