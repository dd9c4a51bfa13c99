"""Every incident flow SIGKILLed mid-flow, the service restarted, and the incidents still
end with one ticket, one Slack message per event, one PagerDuty note, one post-mortem
page and one escalation: the demo's expectations, checked after three crashes.

Steps are pinned in flight where a crash must land: the sample service answers its
health check slowly (diagnostics), and the fake vendors hold a request for seconds and
then drop it unanswered without acting (``delay`` + ``disconnect="before"``), so a
killed step has had no effect yet and its re-run is the only one that acts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from examples.incident_response.expectations import gather, missing_effects
from examples.incident_response.launcher import Stack, running_stack
from examples.incident_response.scenario import ALICE, DemoIncidents, PagerDuty, until
from tests.workers import wait_until

IN_FLIGHT = """
SELECT bool_or(e.type = 'step.started') AND NOT bool_or(e.type = 'step.completed')
  FROM run_events e JOIN flow_runs r USING (run_id)
 WHERE r.correlation_key = $1 AND r.flow = $2 AND e.step = $3
"""
DONE = """
SELECT count(*) > 0 FROM run_events e JOIN flow_runs r USING (run_id)
 WHERE r.correlation_key = $1 AND r.flow = $2 AND e.step = $3 AND e.type = 'step.completed'
"""
WAITING = """
SELECT count(*) > 0 FROM run_events e JOIN flow_runs r USING (run_id)
 WHERE r.correlation_key = $1 AND r.flow = 'incident-with-escalation'
   AND e.type = 'signal.waiting'
"""
HOLD: dict[str, Any] = {"delay": 20, "disconnect": "before"}  # in flight, then no effect


async def _crash(stack: Stack) -> None:
    stack.service.kill()
    await stack.service.start()  # same worker id: it takes its runs back at once


async def _done(pg: asyncpg.Connection, incident: str, flow: str, *steps: str) -> None:
    for step in steps:
        await wait_until(pg, DONE, incident, flow, step)


async def test_flows_killed_mid_flow_still_act_once(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        running_stack(database_url, escalate_after=8, log_path=tmp_path / "service.log") as stack,
        aiohttp.ClientSession() as http,
    ):
        pd = PagerDuty(http, stack)
        sandbox = stack.sandbox

        # Crash 1: incident-response in diagnostics, incident-with-oncall in its Slack DM,
        # incident-with-escalation waiting for the acknowledgement.
        stack.sample.break_("connection-pool-exhausted", latency=20)
        sandbox.inject("slack", "/api/users.lookupByEmail", **HOLD)
        first = await pd.alert("checkout 5xx", severity="critical", source="t", dedup_key="a")
        await pd.deliver("incident.triggered", first, pd.integration(first))
        incident = first["id"]
        await _done(pg, incident, "incident-response", "ticket", "slack-triggered")
        await wait_until(pg, IN_FLIGHT, incident, "incident-response", "diagnostics")
        await wait_until(pg, IN_FLIGHT, incident, "incident-with-oncall", "oncall-dm")
        await wait_until(pg, WAITING, incident)
        first = await pd.acknowledge(first, ALICE)  # its webhook waits for the restart
        stack.service.kill()
        stack.sample.break_("connection-pool-exhausted")  # answers quickly from now on
        await stack.service.start()
        await pd.deliver("incident.acknowledged", first, pd.user(ALICE))

        async def resolved() -> bool:
            return str((await pd.incident(incident))["status"]) == "resolved"

        await until(resolved, "the auto-remediation", timeout=60)
        await _done(pg, incident, "incident-response", "slack-remediated", "slack-acknowledged")

        # The second incident: nobody acknowledges it; its escalation timer runs across
        # the next two crashes.
        stack.sample.break_("payment-gateway-timeouts")
        second = await pd.alert("payments", severity="error", source="t", dedup_key="b")
        await pd.deliver("incident.triggered", second, pd.integration(second))
        await _done(pg, second["id"], "incident-response", "slack-triggered", "pagerduty-note")
        await _done(pg, second["id"], "incident-with-oncall", "oncall-dm")
        await wait_until(pg, WAITING, second["id"])

        # Crash 2: incident-response and incident-with-metrics posting to Slack.
        sandbox.inject("slack", "/api/chat.postMessage", times=2, **HOLD)
        sandbox.inject("confluence", "/wiki/api/v2/pages", method="POST", **HOLD)
        await pd.deliver("incident.resolved", await pd.incident(incident), pd.integration(first))
        await wait_until(pg, IN_FLIGHT, incident, "incident-response", "slack-resolved")
        await wait_until(pg, IN_FLIGHT, incident, "incident-with-metrics", "slack-metrics")
        await _crash(stack)

        # Crash 3: post-incident creating the post-mortem page.
        await wait_until(pg, IN_FLIGHT, incident, "post-incident", "postmortem-page")
        await _crash(stack)

        incidents = DemoIncidents(remediated=first, escalated=second)
        missing: list[str] = []

        async def settled() -> bool:
            missing[:] = [
                m
                for m in missing_effects(await gather(stack, pg, incidents), incidents)
                # Gauges live in the process that set them: the one killed after it did.
                if not m.startswith("/metrics")
            ]
            return not missing

        try:
            await until(settled, "every effect", timeout=60)
        except TimeoutError:
            raise AssertionError("\n".join([*missing, stack.service.log_tail()])) from None

    # The crashes landed where intended: each pinned step ran twice, its first attempt
    # cut off; completed steps never ran again.
    attempts = {
        (r["flow"], r["step"]): r["attempts"]
        for r in await pg.fetch(
            "SELECT r.flow, e.step, max(e.attempt) AS attempts FROM run_events e "
            "JOIN flow_runs r USING (run_id) WHERE e.type = 'step.started' "
            "AND r.correlation_key = $1 GROUP BY 1, 2",
            incident,
        )
    }
    for pinned in (
        ("incident-response", "diagnostics"),
        ("incident-with-oncall", "oncall-dm"),
        ("incident-response", "slack-resolved"),
        ("incident-with-metrics", "slack-metrics"),
        ("post-incident", "postmortem-page"),
    ):
        assert attempts[pinned] >= 2, pinned
    assert attempts[("incident-response", "ticket")] == 1
    assert attempts[("incident-response", "remediation")] == 1
    resumed = await pg.fetchval(
        "SELECT count(*) FROM run_events WHERE type = 'run.resumed' AND data->>'reason' = 'restart'"
    )
    assert resumed >= 5
