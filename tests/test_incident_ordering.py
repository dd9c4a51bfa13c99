"""Webhooks as they really arrive: the same event delivered again (a retry, and a
replay under a new delivery id), and out of order (resolved before acknowledged, and
before the ticket even exists). The incident still ends coherent: one ticket, resolved
and assigned, one message per event, one note, one post-mortem, no escalation."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiohttp
import asyncpg

from examples.incident_response.launcher import running_stack
from examples.incident_response.scenario import ALICE, PagerDuty, until
from providers.adf import to_text
from providers.sandbox import PEOPLE
from tests.workers import wait_until

BOB = next(p for p in PEOPLE if p.key == "bob")


async def test_duplicates_and_disorder_make_one_coherent_incident(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        running_stack(database_url, escalate_after=6, log_path=tmp_path / "service.log") as stack,
        aiohttp.ClientSession() as http,
    ):
        pd = PagerDuty(http, stack)
        stack.sample.break_("payment-gateway-timeouts")  # no automatic fix: humans resolve
        incident = await pd.alert("payments", severity="critical", source="t", dedup_key="p")
        key = incident["id"]
        triggered = pd.webhook("incident.triggered", incident, pd.integration(incident))
        acked = await pd.acknowledge(incident, ALICE)
        ack = pd.webhook("incident.acknowledged", acked, pd.user(ALICE))
        resolved = pd.webhook("incident.resolved", acked, pd.user(BOB))

        # Resolved first, then triggered (twice), then the acknowledgement.
        first = await pd.send(resolved)
        # (While a run of the escalation flow is active, an event becomes a signal to it:
        # let the resolved event's run finish so that the triggered event starts one.)
        await wait_until(
            pg,
            "SELECT bool_and(status = 'completed') FROM flow_runs "
            "WHERE flow = 'incident-with-escalation'",
        )
        started = await pd.send(triggered)
        retry = await pd.send(triggered)  # PagerDuty's retry: the same X-Webhook-Id
        replay = await pd.send(replace(triggered, webhook_id="another-delivery-id"))
        assert not started["duplicate"] and len(started["run_ids"]) == 4
        assert retry["duplicate"] and retry["run_ids"] == started["run_ids"]
        assert replay["duplicate"] and replay["run_ids"] == started["run_ids"]
        await pd.send(ack)
        assert (await pd.send(resolved))["run_ids"] == first["run_ids"]

        def messages() -> list[str]:
            posted = stack.sandbox.state()["slack"]["messages"]
            return [m["text"] for m in posted if incident["html_url"] in m["text"]]

        async def settled() -> bool:
            busy = await pg.fetchval("SELECT count(*) FROM flow_runs WHERE status <> 'completed'")
            return busy == 0 and len(messages()) >= 6

        await until(settled, "every run to complete", timeout=60)
        state, posted = stack.sandbox.state(), messages()

    (ticket,) = state["jira"]["issues"].values()
    fields = ticket["fields"]
    assert fields["status"]["name"] == "Resolved" and fields["resolution"]["name"] == "Done"
    assert fields["assignee"]["displayName"] == ALICE.name
    comments = [to_text(c["body"]) for c in state["jira"]["comments"][ticket["key"]]]
    assert len(comments) == 2  # the diagnostics, the post-mortem link
    assert len(state["pagerduty"]["notes"][key]) == 1
    assert Counter(text.split(" ", 1)[0] for text in posted) == {
        ":rotating_light:": 1,  # triggered
        ":pager:": 1,  # the on-call DM
        ":checkered_flag:": 1,  # resolved
        ":eyes:": 1,  # acknowledged
        ":bar_chart:": 1,  # metrics
        ":memo:": 1,  # post-mortem
    }
    pages = [p for p in state["confluence"]["pages"].values() if key in p["title"]]
    assert len(pages) == 1
    assert not [i for i in state["pagerduty"]["incidents"] if i != key]  # no escalation

    runs = await pg.fetch(
        "SELECT flow, count(*) AS n FROM flow_runs WHERE correlation_key = $1 GROUP BY flow",
        key,
    )
    # Three events; the acknowledgement went to the waiting escalation run as a signal.
    assert {r["flow"]: r["n"] for r in runs} == {
        "incident-response": 3,
        "incident-with-oncall": 3,
        "incident-with-metrics": 3,
        "incident-with-escalation": 2,
        "post-incident": 1,
    }
    waited = await pg.fetch(
        "SELECT e.type, e.data->>'name' AS name FROM run_events e JOIN flow_runs r "
        "USING (run_id) WHERE r.flow = 'incident-with-escalation' AND e.type LIKE 'signal.%'"
    )
    assert [(w["type"], w["name"]) for w in waited] == [
        ("signal.waiting", "incident.acknowledged"),
        ("signal.received", "incident.acknowledged"),
    ]
    # The resolved run waited for the ticket the triggered run had not created yet.
    early = await pg.fetchval(
        "SELECT count(*) FROM run_events e JOIN flow_runs r USING (run_id) "
        "WHERE r.correlation_key = $1 AND e.step = 'resolved-ticket' AND e.type = 'step.failed'",
        key,
    )
    assert early >= 1
