"""``make demo DEMO_ONCE=1`` as a test: the whole story against the test database, then
every effect checked where it landed (the fake vendors' state and SQL)."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console

from examples.incident_response import demo
from providers.adf import to_text


async def test_the_demo_story_happens_once_each(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESOLUTE_DATABASE_URL", database_url)
    monkeypatch.setenv("RESOLUTE_HOME", str(tmp_path))
    monkeypatch.setenv("RESOLUTE_PORT", "0")
    printed = io.StringIO()
    outcome = await demo.run(once=True, console=Console(file=printed, width=200))
    out = printed.getvalue()
    assert outcome.missing == [], out
    assert outcome.incidents is not None and outcome.facts is not None
    first, second = outcome.incidents.remediated["id"], outcome.incidents.escalated["id"]

    # What it printed: the live log, the SQL read-back, the vendors, the verdict.
    for shown in (
        "✔ remediation  restart checkout-api: healthy again",
        "⌛ gave up waiting for incident.acknowledged",
        f"incident_timeline of {first}",
        "incident_metrics",
        "Jira (fake)",
        "every expected effect happened",
    ):
        assert shown in out

    # The vendors, independently of the demo's own checks.
    state = outcome.facts.sandbox
    (ticket,) = [
        i for i in state["jira"]["issues"].values() if f"pd-{first}" in i["fields"]["labels"]
    ]
    fields = ticket["fields"]
    assert (fields["status"]["name"], fields["resolution"]["name"]) == (
        "Resolved",
        "Auto-remediated",
    )
    assert fields["priority"]["name"] == "Highest" and fields["issuetype"]["name"] == "Incident"
    assert fields["assignee"]["displayName"] == "Alice Moreau"
    assert outcome.incidents.remediated["html_url"] in to_text(fields["description"])
    comments = [to_text(c["body"]) for c in state["jira"]["comments"][ticket["key"]]]
    assert len(comments) == 2 and "checkout-api runbook" in comments[0]
    (note,) = state["pagerduty"]["notes"][first]
    assert ticket["key"] in note["content"]
    resolves = [e for e in state["pagerduty"]["events"] if e["event_action"] == "resolve"]
    assert [e["dedup_key"] for e in resolves] == [outcome.incidents.remediated["incident_key"]]
    (page,) = [p for p in state["confluence"]["pages"].values() if first in p["title"]]
    body = page["body"]["storage"]["value"]
    assert "Review meeting" in body and "completed remediation" in body
    assert outcome.facts.sample["restarts"] == 1

    # The event log, through SQL.
    runs = await pg.fetch("SELECT flow, correlation_key, status FROM flow_runs ORDER BY created_at")
    assert {r["status"] for r in runs} == {"completed"}
    per_flow = {(r["flow"], r["correlation_key"]) for r in runs}
    assert ("post-incident", first) in per_flow and ("post-incident", second) not in per_flow
    metrics = {r["incident"]: r for r in await pg.fetch("SELECT * FROM incident_metrics")}
    assert metrics[first]["auto_remediated"] and not metrics[first]["escalated"]
    assert metrics[first]["time_to_acknowledge"] < metrics[first]["time_to_resolve"]
    assert metrics[second]["escalated"] and metrics[second]["time_to_acknowledge"] is None
    deliveries = await pg.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE verification = 'verified'"
    )
    assert deliveries == 4  # triggered, acknowledged, resolved; triggered
    broken = await pg.fetchval("SELECT count(*) FROM run_events WHERE hash IS NULL")
    assert broken == 0
