"""What the demo prints: the event log as it grows, then the incident timeline and
metrics read back from SQL, and what landed in the fake vendors."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from providers.adf import to_text

__all__ = ["LogPrinter", "print_metrics", "print_sandbox", "print_timelines"]

# Bookkeeping the live log leaves out: starts, parallel blocks, timers' own events.
QUIET = ("step.started", "parallel.started", "parallel.completed", "timer.started", "run.completed")

# Audit events worth a line, with their mark.
MARKS = {
    "step.completed": "[green]✔[/]",
    "step.failed": "[yellow]✘[/]",
    "step.cancelled": "[yellow]⊘[/]",
    "branch.decided": "[blue]↳[/]",
    "signal.waiting": "[cyan]⏳[/]",
    "signal.received": "[cyan]✉[/]",
    "signal.timed_out": "[yellow]⌛[/]",
    "run.started": "[blue]▶[/]",
    "run.resumed": "[magenta]↻[/]",
    "run.failed": "[red]✘[/]",
    "run.cancelled": "[red]⊘[/]",
}


SLACK_LINK = re.compile(r"<[^|>]+\|([^>]+)>")  # <url|text> shows as text

# How far behind the newest event each poll looks again: an append that took its
# timestamp earlier can commit later.
LOOK_BEHIND = timedelta(seconds=5)


def _short(text: Any, limit: int = 90) -> str:
    flat = SLACK_LINK.sub(r"\1", " ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def gist(output: Any, given: Any) -> str:
    """One line about what a step produced (``given``: its recorded input)."""
    if isinstance(output, list):
        names = [o.get("name") or o.get("email") for o in output if isinstance(o, dict)]
        return ", ".join(map(str, names)) or "[]"
    if not isinstance(output, dict):
        return _short(json.dumps(output, default=str))
    o = output
    if "user_id" in o and "email" in o:  # an on-call
        return f"{o['name']} <{o['email']}>, escalation level {o['escalation_level']}"
    if "remediation_available" in o:
        plan = o["remediation"] if o["remediation_available"] else "no automatic fix"
        return f"{o['runbook']} runbook: {plan} (confidence {o['confidence']:.0%})"
    if "success" in o and "action" in o:
        return f"{o['action']}: {'healthy again' if o['success'] else 'still failing'}"
    if "ts" in o and isinstance(given, dict):  # Slack
        return _short(f"{o['channel']}: {given.get('text', '')}")
    if "transition" in o:
        return f"{o['issue_key']} → {o['status']}" + ("" if o["changed"] else " (already)")
    if "account_id" in o:
        return f"{o['issue_key']} assigned to {o['display_name']}"
    if "key" in o and "url" in o:
        return _short(f"{o['key']} {o.get('summary') or ''}")
    if "issue_key" in o:
        return f"commented on {o['issue_key']}"
    if "content" in o:
        return _short(f"note: {o['content']}")
    if "dedup_key" in o and "message" in o:
        return f"{o['message']} (dedup key {o['dedup_key']})"
    if "space_id" in o:
        return _short(f"{o['title']} {o.get('url') or ''}")
    if "event_type" in o:
        return f"{o['event_type']} of {o['incident_id']}"
    if "time_to_resolve_seconds" in o:
        return _short(", ".join(f"{k}={v}" for k, v in o.items() if k != "incident_id"))
    if "review" in o:
        return f"{o['title']}; review {o['review']}"
    if "status" in o and "title" in o:
        return f"{o['id']} is {o['status']}"
    if "resolved_at" in o:
        return f"sent incident-resolved for {o['incident_id']}"
    if "received" in o:
        return "acknowledged in time" if o["received"] else "nobody acknowledged"
    return _short(json.dumps(o, default=str))


def _line(row: asyncpg.Record, data: dict[str, Any], given: Any) -> str | None:
    kind = row["type"]
    if kind in QUIET or kind not in MARKS:
        return None
    if kind == "step.completed":
        if row["step"] == "event":
            return None  # every flow parses every delivery; the narration says so
        what = f"[bold]{escape(row['step'])}[/]  {escape(gist(data.get('output'), given))}"
    elif kind == "branch.decided":
        if data.get("arm", -1) < 0:
            return None  # a flow that has nothing to do for this event
        what = f"[dim]{escape(row['summary'])}[/]"
    elif kind == "run.started":
        if data.get("trigger") != "signal":
            return None  # every webhook starts one run per flow: the steps say the rest
        what = "started by the incident-resolved signal"
    else:
        what = escape(row["summary"] or kind)
    at: datetime = row["at"]
    return (
        f"[dim]{at.strftime('%H:%M:%S.%f')[:-3]}[/] [cyan]{escape(row['incident'] or '-')}[/] "
        f"[magenta]{escape(row['flow']):<24}[/] {MARKS[kind]} {what}"
    )


class LogPrinter:
    """Polls ``audit_timeline`` and prints each new event worth a line."""

    QUERY = """
        SELECT a.run_id, a.seq, a.at, a.flow, a.incident, a.type, a.step, a.summary,
               e.node_path, e.data::text AS data
          FROM audit_timeline a JOIN run_events e ON e.run_id = a.run_id AND e.seq = a.seq
         WHERE a.at >= $1 ORDER BY a.at, a.run_id, a.seq
    """

    def __init__(self, pool: asyncpg.Pool, console: Console, since: datetime) -> None:
        self.pool = pool
        self.console = console
        self.since = since
        self.seen: set[tuple[str, int]] = set()
        self.inputs: dict[tuple[str, str], Any] = {}

    async def poll(self) -> None:
        rows = await self.pool.fetch(self.QUERY, self.since)
        for row in rows:
            key = (str(row["run_id"]), row["seq"])
            if key in self.seen:
                continue
            self.seen.add(key)
            data = json.loads(row["data"])
            if row["type"] == "step.started":
                self.inputs[(key[0], row["node_path"])] = data.get("input")
            line = _line(row, data, self.inputs.get((key[0], row["node_path"])))
            if line:
                self.console.print(line, highlight=False, soft_wrap=True)
        if rows:
            self.since = max(self.since, rows[-1]["at"] - LOOK_BEHIND)

    async def run(self, every: float = 0.25) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(every)


async def print_timelines(console: Console, pool: asyncpg.Pool, incidents: list[str]) -> None:
    rows = await pool.fetch(
        "SELECT incident, at, flow, type, step, summary, actor FROM incident_timeline "
        "WHERE incident = ANY($1::text[]) AND type <> ALL($2::text[]) "
        "AND summary IS DISTINCT FROM 'decided no arm matched'",
        incidents,
        list(QUIET),
    )
    for incident in incidents:
        table = Table(title=f"incident_timeline of {incident} (without bookkeeping)")
        for column in ("time", "flow", "event", "actor"):
            table.add_column(column)
        for r in rows:
            if r["incident"] == incident:
                at = r["at"].strftime("%H:%M:%S.%f")[:-3]
                table.add_row(at, r["flow"], escape(r["summary"] or r["type"]), r["actor"])
        console.print(table)


async def print_metrics(console: Console, pool: asyncpg.Pool, incidents: list[str]) -> None:
    rows = await pool.fetch(
        "SELECT * FROM incident_metrics WHERE incident = ANY($1::text[]) ORDER BY triggered_at",
        incidents,
    )
    table = Table(title="incident_metrics")
    columns = ("incident", "time_to_acknowledge", "time_to_resolve", "auto_remediated")
    for column in (*columns, "escalated", "diagnostics_run"):
        table.add_column(column)
    for r in rows:
        table.add_row(*(str(r[c]) for c in (*columns, "escalated", "diagnostics_run")))
    console.print(table)


def print_sandbox(console: Console, state: dict[str, Any], sample: dict[str, Any]) -> None:
    jira, slack = state["jira"], state["slack"]
    t = Table(title="Jira (fake)")
    for column in ("issue", "summary", "priority", "status", "assignee", "comments"):
        t.add_column(column)
    for key, issue in jira["issues"].items():
        f = issue["fields"]
        status = f["status"]["name"] + (f" ({f['resolution']['name']})" if f["resolution"] else "")
        comments = [_short(to_text(c["body"]), 60) for c in jira["comments"].get(key, [])]
        assignee = (f.get("assignee") or {}).get("displayName", "")
        priority = (f.get("priority") or {}).get("name", "")
        t.add_row(
            key, escape(f["summary"]), priority, status, assignee, escape("\n".join(comments))
        )
    console.print(t)
    names = {c["id"]: "#" + c["name"] for c in slack["channels"].values()}
    names.update({dm: f"DM {user}" for user, dm in slack["dms"].items()})
    t = Table(title="Slack (fake)")
    t.add_column("channel")
    t.add_column("message")
    for m in slack["messages"]:
        t.add_row(names.get(m["channel"], m["channel"]), escape(_short(m["text"], 110)))
    console.print(t)
    pd = state["pagerduty"]
    t = Table(title="PagerDuty (fake)")
    for column in ("incident", "title", "status", "notes"):
        t.add_column(column)
    for i in pd["incidents"].values():
        notes = [_short(n["content"], 70) for n in pd["notes"].get(i["id"], [])]
        t.add_row(i["id"], escape(i["title"]), i["status"], escape("\n".join(notes)))
    console.print(t)
    t = Table(title="Confluence (fake)")
    t.add_column("page")
    t.add_column("size")
    for p in state["confluence"]["pages"].values():
        t.add_row(escape(p["title"]), f"{len(p['body']['storage']['value'])} chars")
    console.print(t)
    healthy = "healthy" if sample["healthy"] else f"degraded ({sample['fault']})"
    console.print(f"checkout-api (sample service): {healthy}, restarted {sample['restarts']}x")
