"""``resolute``: run workers, migrate, inspect and steer runs from a terminal."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .client import Client
from .database import display_url, migrate_sync, resolve_database_url
from .errors import ResoluteError
from .interpreter import check_compatible, decide
from .logs import configure_logging
from .postmortem import AuditTrail, IncidentReport, render_markdown
from .state import fold
from .worker import Worker

__all__ = ["app", "load_target", "main"]

app = typer.Typer(
    help="Resolute: durable incident-response flows on PostgreSQL.", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
incidents_app = typer.Typer(
    help="Incidents: runs grouped by correlation key.", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit trail's integrity.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(incidents_app, name="incidents")
app.add_typer(audit_app, name="audit")

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


HostOpt = Annotated[
    str | None, typer.Option(help="listen address (default: RESOLUTE_HOST, 127.0.0.1)")
]
PortOpt = Annotated[
    int | None, typer.Option(min=0, max=65535, help="listen port (default: RESOLUTE_PORT, 8080)")
]


def _service(target: str, host: str | None, port: int | None, *, with_worker: bool) -> None:
    from pydantic import ValidationError
    from rich.markup import escape

    from .service import run_service
    from .settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"[red]error:[/red] invalid RESOLUTE_* setting: {escape(str(exc))}")
        raise typer.Exit(1) from None
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    settings.export()
    configure_logging(settings.log_level, settings.log_format)
    try:
        w = load_target(target)
        if not isinstance(w, Worker):
            raise typer.BadParameter(f"{target} is a {type(w).__name__}, not a Worker")
        asyncio.run(run_service(w, settings, with_worker=with_worker))
    except ResoluteError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTR of a Worker (or a function returning one)")
    ],
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Run the HTTP service (webhooks, API, health, metrics) and a worker in one process."""
    _service(target, host, port, with_worker=True)


@app.command()
def api(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTR of a Worker (or a function returning one)")
    ],
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Run only the HTTP service; run workers separately with `resolute worker`."""
    _service(target, host, port, with_worker=False)


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


_COLOURS = {
    "run.started": "bold cyan",
    "run.completed": "bold green",
    "run.failed": "bold red",
    "run.cancelled": "bold yellow",
    "run.resumed": "magenta",
    "step.completed": "green",
    "step.failed": "red",
    "step.cancelled": "yellow",
    "signal.received": "cyan",
    "signal.timed_out": "yellow",
    "timer.fired": "blue",
}


def _trail(url: str | None) -> AuditTrail:
    return AuditTrail(resolve_database_url(url))


async def _report(url: str | None, incident: str) -> IncidentReport:
    trail = _trail(url)
    try:
        report = await trail.report(incident)
    finally:
        await trail.close()
    if not report.timeline:
        err.print(f"[red]error:[/red] no runs carry the correlation key {incident!r}")
        raise typer.Exit(1)
    return report


@incidents_app.command("list")
def incidents_list(database_url: DatabaseOpt = None, limit: int = 50) -> None:
    """Incidents (runs grouped by correlation key) with their response metrics."""

    async def go() -> None:
        trail = _trail(database_url)
        try:
            rows = await trail.incidents(limit)
        finally:
            await trail.close()
        table = Table(
            "incident",
            "triggered",
            "to ack",
            "to resolve",
            "auto-remediated",
            "escalated",
            "diagnostics",
        )
        for m in rows:
            table.add_row(
                m.incident,
                _when(m.triggered_at),
                _span(m.time_to_acknowledge),
                _span(m.time_to_resolve),
                "yes" if m.auto_remediated else "no",
                "yes" if m.escalated else "no",
                str(m.diagnostics_run),
            )
        out.print(table)

    _run(go)


@incidents_app.command("show")
def incidents_show(incident: str, database_url: DatabaseOpt = None) -> None:
    """An incident's timeline across all its runs, in colour."""

    async def go() -> None:
        report = await _report(database_url, incident)
        table = Table("time", "flow", "event", "actor", title=f"incident {incident}")
        for e in report.timeline:
            style = _COLOURS.get(e.type, "")
            table.add_row(_when(e.at), e.flow, e.summary or e.type, e.actor, style=style)
        out.print(table)

    _run(go)


@app.command()
def postmortem(
    incident: str,
    database_url: DatabaseOpt = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="write to a file")] = None,
) -> None:
    """A Markdown post-mortem draft from the incident's audit trail."""

    async def go() -> str:
        return render_markdown(await _report(database_url, incident))

    text = _run(go)
    if output:
        Path(output).write_text(text)
        out.print(f"wrote {output}")
    else:
        out.print(text, markup=False, highlight=False)


@audit_app.command("verify")
def audit_verify(
    run_id: Annotated[str | None, typer.Argument(help="one run (default: every run)")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Check each run's hash chain; name the first broken link. Exit 1 if any."""

    async def go() -> None:
        async with _client(database_url) as c:
            if run_id is not None:
                await c.get_run(run_id)
            checked, broken = await c.store.verify_chain(run_id)
        for b in broken:
            out.print(f"[red]BROKEN[/red] run {b.run_id} at event {b.seq} ({b.type}): {b.reason}")
        if broken:
            raise typer.Exit(1)
        out.print(f"[green]ok[/green]: {checked} events, every hash chain intact")

    _run(go)


def _span(value: timedelta | None) -> str:
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m {seconds % 60:02d}s"


@app.command()
def sandbox() -> None:
    """Start the fake PagerDuty/Jira/Slack/Confluence APIs on loopback ports."""
    from providers.sandbox import main as sandbox_main

    sandbox_main()


def main() -> None:
    app()
