"""The incident-response example's parts, without the service: the five flows build and
share their route, the step aliases the audit views read exist, the runbooks judge the
sample service right, the remediation really fixes it, and the post-mortem page and
meeting slot come out as intended."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest

from examples.incident_response.expectations import Facts, missing_effects
from examples.incident_response.sample_service import SampleService, start_sample_service
from examples.incident_response.scenario import DemoIncidents
from orchestrator.definition import FlowDefinition, NodeStep, walk
from orchestrator.postmortem import IncidentMetrics, IncidentReport, TimelineEntry
from orchestrator.triggers import SignalTrigger, WebhookTrigger
from orchestrator.webhooks import webhook_routes
from providers.jira import JiraIssue
from providers.pagerduty import IncidentEvent, parse_incident_event

FLOW_MODULES = ("incident_response", "oncall", "metrics", "escalation", "post_incident")


@pytest.fixture(scope="module")
def modules() -> Iterator[dict[str, ModuleType]]:
    """The flow modules, imported with the settings they read at import."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PAGERDUTY_WEBHOOK_SECRETS", "example-secret")
        yield {
            name: importlib.import_module(f"examples.incident_response.{name}")
            for name in FLOW_MODULES
        }


@pytest.fixture(scope="module")
def flows(modules: dict[str, ModuleType]) -> dict[str, FlowDefinition]:
    built = [m.flow.build() for m in modules.values()]
    return {f.name: f for f in built}


def test_five_flows_share_the_pagerduty_route(flows: dict[str, FlowDefinition]) -> None:
    assert set(flows) == {
        "incident-response",
        "incident-with-oncall",
        "incident-with-metrics",
        "incident-with-escalation",
        "post-incident",
    }
    (route,) = webhook_routes(flows)  # one route, one verifier, one dedup and correlation
    assert route.path == "/pagerduty/incident" and len(route.verifiers) == 1
    assert dict(route.flows) == {
        "incident-response": False,
        "incident-with-oncall": False,
        "incident-with-metrics": False,
        "incident-with-escalation": True,  # the ack reaches the waiting run
    }
    assert flows["post-incident"].triggers == (SignalTrigger("incident-resolved"),)
    trigger = flows["incident-response"].triggers[0]
    assert isinstance(trigger, WebhookTrigger) and trigger.correlate is not None


def test_the_aliases_incident_metrics_reads_exist(flows: dict[str, FlowDefinition]) -> None:
    def aliases(flow: str) -> set[str]:
        return {s.alias for s in walk(flows[flow].steps) if isinstance(s, NodeStep)}

    assert {"diagnostics", "remediation", "resolve-event"} <= aliases("incident-response")
    assert "escalation" in aliases("incident-with-escalation")


def _webhook(event_type: str, **data: Any) -> dict[str, Any]:
    incident = {"id": "Q1", "type": "incident", "title": "t", "urgency": "high", **data}
    return {
        "event": {
            "id": "E1",
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2026-03-06T09:00:00Z",
            "data": incident,
        }
    }


def test_the_route_correlates_by_incident_and_dedups_by_event(
    modules: dict[str, ModuleType],
) -> None:
    from examples.incident_response.common import event_id, incident_id

    note = {"event": {"data": {"type": "incident_note", "incident": {"id": "Q9"}}}}
    assert incident_id(_webhook("incident.triggered")) == "Q1" and incident_id(note) == "Q9"
    assert incident_id({"event": "x"}) is None and incident_id({}) is None
    assert event_id(_webhook("incident.triggered"), {}) == "E1" and event_id({}, {}) is None


def test_ticket_priority_follows_severity(modules: dict[str, ModuleType]) -> None:
    ir = modules["incident_response"]
    assert ir.PRIORITY == {
        "critical": "Highest",
        "error": "High",
        "warning": "Medium",
        "info": "Low",
    }
    event = parse_incident_event(_webhook("incident.triggered", urgency="low"))
    assert ir.PRIORITY[event.severity] == "Medium"


@pytest.fixture
async def sample() -> AsyncIterator[SampleService]:
    service = await start_sample_service()
    yield service
    await service.close()


def _event(service: str) -> IncidentEvent:
    payload = _webhook("incident.triggered", service={"id": "S", "summary": service})
    return parse_incident_event(payload)


async def test_runbooks_judge_the_sample_service(
    sample: SampleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.incident_response import diagnostics as d

    monkeypatch.setattr(d, "CHECKOUT_API_URL", sample.url)
    healthy = await d.checkout_api(_event("checkout-api"))
    assert healthy.healthy and not healthy.remediation_available

    sample.break_("payment-gateway-timeouts")
    upstream = await d.checkout_api(_event("checkout-api"))
    assert not upstream.remediation_available and upstream.confidence < 0.9
    assert "payment-gateway-timeouts" in upstream.summary

    sample.break_("connection-pool-exhausted")
    fixable = await d.run_diagnostics.fn(_event("checkout-api"))
    assert fixable.remediation_available and fixable.confidence > 0.9
    assert fixable.runbook == "checkout-api" and "FAIL" in fixable.summary

    fixed = await d.remediate.fn(fixable)  # really restarts it
    assert fixed.success and sample.state()["healthy"] and sample.state()["restarts"] == 1

    other = await d.run_diagnostics.fn(_event("search-api"))  # no runbook: the fallback
    assert other.runbook == "generic" and not other.remediation_available
    assert other.confidence == 0 and "no runbook for search-api" in other.summary


async def test_a_remediation_that_does_not_help_says_so(
    sample: SampleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.incident_response import diagnostics as d

    monkeypatch.setattr(d, "CHECKOUT_API_URL", sample.url)
    sample.break_("payment-gateway-timeouts")
    found = await d.checkout_api(_event("checkout-api"))
    attempt = found.model_copy(
        update={
            "remediation": "restart checkout-api",
            "remediation_url": f"{sample.url}/admin/restart",
        }
    )
    monkeypatch.setattr(d, "RECOVERY_INTERVAL", 0.01)
    result = await d.remediate.fn(attempt)
    assert not result.success and "still unhealthy" in result.detail


@pytest.mark.parametrize(
    ("resolved", "slot"),
    [
        ("2026-03-04T17:30:00+00:00", "2026-03-05T10:00:00+00:00"),  # Wednesday -> Thursday
        ("2026-03-06T23:59:00+00:00", "2026-03-09T10:00:00+00:00"),  # Friday -> Monday
        ("2026-03-07T08:00:00+00:00", "2026-03-09T10:00:00+00:00"),  # Saturday -> Monday
        ("2026-03-06T23:30:00-05:00", "2026-03-09T10:00:00+00:00"),  # Saturday in UTC
    ],
)
def test_the_review_is_the_next_business_day_at_ten_utc(
    modules: dict[str, ModuleType], resolved: str, slot: str
) -> None:
    review_slot = modules["post_incident"].review_slot
    assert review_slot(datetime.fromisoformat(resolved)) == datetime.fromisoformat(slot)


def test_the_postmortem_page_is_filled_and_escaped(modules: dict[str, ModuleType]) -> None:
    from examples.incident_response.common import ResolvedIncident

    pm = modules["post_incident"]
    at = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
    incident = ResolvedIncident(
        incident_id="Q1", incident_number=7, title="<b>db</b> & co", resolved_at=at
    )
    ticket = JiraIssue(id="1", key="OPS-1", url="https://jira.example/browse/OPS-1")
    entry = TimelineEntry(
        at=at, flow="incident-response", run_id="r", seq=3, type="step.completed",
        step="remediation", summary="completed remediation in 12 ms", actor="worker-1",
    )  # fmt: skip
    metrics = IncidentMetrics(incident="Q1", auto_remediated=True, diagnostics_run=1)
    report = IncidentReport(incident="Q1", metrics=metrics, timeline=[entry])
    body = pm.render_page(incident, ticket, report, "Monday 2026-03-09 10:00 UTC")
    assert "&lt;b&gt;db&lt;/b&gt; &amp; co" in body and "<b>db</b>" not in body
    assert "Monday 2026-03-09 10:00 UTC" in body and "OPS-1" in body
    assert "<td>completed remediation in 12 ms</td>" in body and "worker-1" in body
    assert "Auto-remediated</th><td>yes" in body


def test_missing_effects_are_listed_in_words() -> None:
    """What ``make demo DEMO_ONCE=1`` prints (and exits 1 on) when nothing happened."""
    incident = {"id": "Q1", "incident_number": 1, "html_url": "http://pd/Q1"}
    escalated = {"id": "Q2", "incident_number": 2, "html_url": "http://pd/Q2"}
    sandbox = {
        "jira": {"issues": {}, "comments": {}},
        "slack": {
            "channels": {
                "C1": {"id": "C1", "name": "incidents"},
                "C2": {"id": "C2", "name": "ops"},
            },
            "dms": {},
            "messages": [],
        },
        "pagerduty": {
            "incidents": {"Q1": {"status": "triggered", "incident_key": "k"}},
            "notes": {},
        },
        "confluence": {"pages": {}},
    }
    facts = Facts(
        sandbox=sandbox,
        sample={"restarts": 0, "history": []},
        runs=[{"flow": "post-incident", "status": "failed", "incident": "Q1", "error": "boom"}],
        metrics={},
        prometheus="",
    )
    missing = missing_effects(facts, DemoIncidents(remediated=incident, escalated=escalated))
    text = "\n".join(missing)
    for expected in (
        "Jira: a ticket for PD #1 (Q1): expected exactly once, found 0",
        "Slack #incidents: the auto-remediation of PD #1 (Q1)",
        "PagerDuty: PD #1 (Q1) resolved (is triggered)",
        "PagerDuty: the management escalation of PD #2 (Q2)",
        "Confluence: the post-mortem page of PD #1 (Q1)",
        "SQL: a post-incident run of Q1 is failed: boom",
        "sample service: restarted once (was 0)",
        '/metrics: resolute_incident_time_to_resolve_seconds{service="checkout-api"}',
    ):
        assert expected in text
