"""What the demo's story must leave behind, checked where it landed: the fake vendors'
state, the sample service, the event log (SQL) and the service's ``/metrics``.

``missing_effects`` lists, in words, every effect that did not happen (or happened
more than once); an empty list means the demo worked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from providers.adf import to_text

from .launcher import Stack
from .scenario import ALICE, DemoIncidents

__all__ = ["Facts", "gather", "missing_effects"]

# The Slack announcements of the remediated incident, by their opening emoji.
ANNOUNCEMENTS = {
    ":rotating_light:": "the triggered alert",
    ":eyes:": "the acknowledgement",
    ":white_check_mark:": "the auto-remediation",
    ":checkered_flag:": "the resolution",
    ":bar_chart:": "the metrics summary",
    ":memo:": "the post-mortem announcement",
}


@dataclass
class Facts:
    sandbox: dict[str, Any]
    sample: dict[str, Any]
    runs: list[dict[str, Any]]  # flow_runs of the incidents: flow, status, incident, error
    metrics: dict[str, dict[str, Any]]  # incident_metrics rows by incident
    prometheus: str  # the service's /metrics


async def gather(stack: Stack, pg: asyncpg.Connection, incidents: DemoIncidents) -> Facts:
    keys = [incidents.remediated["id"], incidents.escalated["id"]]
    runs = await pg.fetch(
        "SELECT flow, status, correlation_key AS incident, error FROM flow_runs "
        "WHERE correlation_key = ANY($1::text[]) ORDER BY created_at",
        keys,
    )
    rows = await pg.fetch("SELECT * FROM incident_metrics WHERE incident = ANY($1::text[])", keys)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.service.url}/metrics") as resp,
    ):
        prometheus = await resp.text()
    return Facts(
        sandbox=stack.sandbox.state(),
        sample=stack.sample.state(),
        runs=[dict(r) for r in runs],
        metrics={r["incident"]: dict(r) for r in rows},
        prometheus=prometheus,
    )


def _name(incident: dict[str, Any]) -> str:
    return f"PD #{incident['incident_number']} ({incident['id']})"


def _tickets(jira: dict[str, Any], incident: dict[str, Any]) -> list[dict[str, Any]]:
    label = f"pd-{incident['id']}"
    return [i for i in jira["issues"].values() if label in i["fields"]["labels"]]


def _count(texts: list[str], needle: str) -> int:
    return sum(needle in t for t in texts)


class _Checker:
    def __init__(self) -> None:
        self.missing: list[str] = []

    def once(self, found: int, what: str) -> None:
        if found != 1:
            self.missing.append(f"{what}: expected exactly once, found {found}")

    def never(self, found: int, what: str) -> None:
        if found:
            self.missing.append(f"{what}: expected none, found {found}")

    def true(self, ok: bool, what: str) -> None:
        if not ok:
            self.missing.append(what)


def _jira(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    jira = f.sandbox["jira"]
    for incident, fixed in ((first, True), (second, False)):
        name = _name(incident)
        tickets = _tickets(jira, incident)
        c.once(len(tickets), f"Jira: a ticket for {name}")
        if len(tickets) != 1:
            continue
        ticket = tickets[0]
        fields, key = ticket["fields"], ticket["key"]
        comments = [to_text(x["body"]) for x in jira["comments"].get(key, [])]
        c.true(fields["issuetype"]["name"] == "Incident", f"Jira: {key} is an Incident")
        c.true(
            incident["html_url"] in to_text(fields["description"]),
            f"Jira: {key}'s description links {name} in PagerDuty",
        )
        c.once(_count(comments, "Diagnostics"), f"Jira: the diagnostics comment on {key}")
        status = fields["status"]["name"]
        resolution = (fields.get("resolution") or {}).get("name")
        if fixed:
            c.true(fields["priority"]["name"] == "Highest", f"Jira: {key} has priority Highest")
            c.true(
                status == "Resolved" and resolution == "Auto-remediated",
                f"Jira: {key} resolved as Auto-remediated (is {status}, {resolution})",
            )
            assignee = (fields.get("assignee") or {}).get("emailAddress")
            c.true(assignee == ALICE.email, f"Jira: {key} assigned to {ALICE.name}")
            c.once(_count(comments, "Post-mortem draft"), f"Jira: the post-mortem link on {key}")
        else:
            c.true(status == "To Do", f"Jira: {key} still open (is {status})")


def _slack(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    slack = f.sandbox["slack"]
    ids = {ch["name"]: ch["id"] for ch in slack["channels"].values()}
    alice_dm = slack["dms"].get(ALICE.slack_id)

    def texts(channel: str | None, incident: dict[str, Any]) -> list[str]:
        return [
            m["text"]
            for m in slack["messages"]
            if m["channel"] == channel and incident["html_url"] in m["text"]
        ]

    posted = texts(ids["incidents"], first)
    for emoji, what in ANNOUNCEMENTS.items():
        c.once(_count(posted, emoji), f"Slack #incidents: {what} of {_name(first)}")
    posted = texts(ids["incidents"], second)
    c.once(_count(posted, ":rotating_light:"), f"Slack #incidents: the alert of {_name(second)}")
    c.never(len(posted) - 1, f"Slack #incidents: more messages about {_name(second)}")
    for incident in (first, second):
        c.once(
            len(texts(alice_dm, incident)), f"Slack: the on-call DM to Alice for {_name(incident)}"
        )
    c.once(len(texts(ids["ops"], second)), f"Slack #ops: the escalation of {_name(second)}")
    c.never(len(texts(ids["ops"], first)), f"Slack #ops: an escalation of {_name(first)}")


def _pagerduty(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    pd = f.sandbox["pagerduty"]
    jira = f.sandbox["jira"]
    for incident in (first, second):
        name = _name(incident)
        notes = [n["content"] for n in pd["notes"].get(incident["id"], [])]
        c.once(len(notes), f"PagerDuty: the diagnostics note on {name}")
        tickets = _tickets(jira, incident)
        if notes and tickets:
            c.true(tickets[0]["key"] in notes[0], f"PagerDuty: the note on {name} links its ticket")
    status = pd["incidents"][first["id"]]["status"]
    c.true(status == "resolved", f"PagerDuty: {_name(first)} resolved (is {status})")
    escalations = [
        i for i in pd["incidents"].values() if i["incident_key"].startswith("escalation-")
    ]
    c.once(
        sum(i["incident_key"] == f"escalation-{second['id']}" for i in escalations),
        f"PagerDuty: the management escalation of {_name(second)}",
    )
    c.never(
        sum(i["incident_key"] == f"escalation-{first['id']}" for i in escalations),
        f"PagerDuty: an escalation of {_name(first)}",
    )


def _confluence(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    pages = f.sandbox["confluence"]["pages"].values()

    def about(incident: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in pages if f"({incident['id']})" in p["title"]]

    found = about(first)
    c.once(len(found), f"Confluence: the post-mortem page of {_name(first)}")
    if len(found) == 1:
        body = found[0]["body"]["storage"]["value"]
        for part in ("Timeline", "10:00 UTC", "Auto-remediated</th><td>yes", "incident-response"):
            c.true(part in body, f"Confluence: the post-mortem page shows {part!r}")
    c.never(len(about(second)), f"Confluence: a post-mortem page of {_name(second)}")


def _log(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    for run in f.runs:
        c.true(
            run["status"] == "completed",
            f"SQL: a {run['flow']} run of {run['incident']} is {run['status']}"
            + (f": {run['error']}" if run["error"] else ""),
        )

    def runs(flow: str, incident: dict[str, Any]) -> int:
        return sum(r["flow"] == flow and r["incident"] == incident["id"] for r in f.runs)

    c.once(runs("post-incident", first), f"SQL: the post-incident run of {_name(first)}")
    c.never(runs("post-incident", second), f"SQL: a post-incident run of {_name(second)}")
    m1, m2 = f.metrics.get(first["id"]), f.metrics.get(second["id"])
    c.true(
        m1 is not None
        and m1["auto_remediated"]
        and not m1["escalated"]
        and m1["diagnostics_run"] == 1
        and m1["time_to_acknowledge"] is not None
        and m1["time_to_resolve"] is not None,
        f"SQL: incident_metrics of {_name(first)}: auto-remediated, acknowledged, resolved, "
        f"one diagnostics run (is {m1})",
    )
    c.true(
        m2 is not None
        and m2["escalated"]
        and not m2["auto_remediated"]
        and m2["acknowledged_at"] is None
        and m2["diagnostics_run"] == 1,
        f"SQL: incident_metrics of {_name(second)}: escalated, never acknowledged (is {m2})",
    )


def _rest(c: _Checker, f: Facts, first: dict[str, Any], second: dict[str, Any]) -> None:
    c.true(
        f.sample["restarts"] == 1, f"sample service: restarted once (was {f.sample['restarts']})"
    )
    cleared = [h for h in f.sample["history"] if h["action"] == "restart" and h.get("cleared")]
    c.true(bool(cleared), "sample service: a restart cleared the connection-pool fault")
    gauge = 'resolute_incident_time_to_resolve_seconds{service="checkout-api"}'
    c.true(gauge in f.prometheus, f"/metrics: {gauge}")


CHECKS: list[Callable[[_Checker, Facts, dict[str, Any], dict[str, Any]], None]] = [
    _jira,
    _slack,
    _pagerduty,
    _confluence,
    _log,
    _rest,
]


def missing_effects(facts: Facts, incidents: DemoIncidents) -> list[str]:
    c = _Checker()
    for check in CHECKS:
        check(c, facts, incidents.remediated, incidents.escalated)
    return c.missing
