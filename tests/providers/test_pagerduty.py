"""PagerDuty nodes against the sandbox, webhook parsing and signatures."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.errors import ConfigurationError, NonRetryableError
from orchestrator.node import StepContext
from orchestrator.refs import Output
from providers import pagerduty
from providers.errors import PayloadError, VendorRequestError, VendorUnavailableError
from providers.pagerduty import IncidentEvent, PagerDutyProvider
from providers.sandbox import CREDENTIALS, Sandbox

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]


async def _triggered(run: Run, ctx_for: Callable[[], Any], summary: str) -> tuple[str, str]:
    """Trigger an alert; return (dedup_key, incident id)."""
    ctx = ctx_for()
    result = await run(pagerduty.trigger_event(summary=summary, source="db-1"), ctx)
    incidents = await run(pagerduty.list_incidents(dedup_key=result.dedup_key), ctx_for())
    assert len(incidents) == 1
    return result.dedup_key, incidents[0].id


async def test_trigger_defaults_dedup_key_to_the_step_and_deduplicates(
    run: Run, make_ctx: MakeContext, pd: PagerDutyProvider, sandbox: Sandbox
) -> None:
    node = pagerduty.trigger_event(
        summary=Output("event.title"),
        source="checkout-api",
        severity="critical",
        custom_details={"region": "eu-west-1"},
        links=[{"href": "https://status.example.com", "text": "status"}],
    )
    ctx = make_ctx(pd, outputs={"event": {"title": "Checkout latency"}})
    first = await run(node, ctx)
    again = await run(node, ctx)  # the same step re-run after a crash
    assert first.dedup_key == again.dedup_key == ctx.idempotency_key
    incidents = [
        i
        for i in sandbox.state()["pagerduty"]["incidents"].values()
        if i["incident_key"] == ctx.idempotency_key
    ]
    assert len(incidents) == 1
    assert incidents[0]["title"] == "Checkout latency"
    assert incidents[0]["urgency"] == "high"


async def test_acknowledge_and_resolve_events(
    run: Run, make_ctx: MakeContext, pd: PagerDutyProvider, sandbox: Sandbox
) -> None:
    dedup_key, incident_id = await _triggered(run, lambda: make_ctx(pd), "Disk full")
    ack = await run(pagerduty.acknowledge_event(dedup_key=dedup_key), make_ctx(pd))
    assert ack.status == "success"
    assert sandbox.state()["pagerduty"]["incidents"][incident_id]["status"] == "acknowledged"
    await run(pagerduty.resolve_event(dedup_key=dedup_key), make_ctx(pd))
    assert sandbox.state()["pagerduty"]["incidents"][incident_id]["status"] == "resolved"
    events = [e for e in sandbox.state()["pagerduty"]["events"] if e["dedup_key"] == dedup_key]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert CREDENTIALS["pagerduty_routing_key"] not in json.dumps(sandbox.state())


async def test_events_api_429_is_retried(
    run: Run, make_ctx: MakeContext, pd: PagerDutyProvider, sandbox: Sandbox
) -> None:
    sandbox.inject("pagerduty", "/v2/enqueue", 429, times=2, retry_after=0)
    result = await run(pagerduty.trigger_event(summary="x", source="y"), make_ctx(pd))
    assert result.status == "success"


async def test_events_api_rejections_surface_the_vendor_message(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    wrong = PagerDutyProvider(
        routing_key="not-a-routing-key-000000000000000",
        events_url=sandbox_env["PAGERDUTY_EVENTS_URL"],
    )
    try:
        with pytest.raises(VendorRequestError) as err:
            await run(pagerduty.resolve_event(dedup_key="k"), make_ctx(wrong))
    finally:
        await wrong.close()
    assert err.value.status == 400
    assert "Invalid routing key" in err.value.vendor_message
    assert "not-a-routing-key" not in str(err.value)


async def test_a_step_can_page_another_service_with_its_routing_key(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    wrong = PagerDutyProvider(
        routing_key="not-a-routing-key-000000000000000",
        events_url=sandbox_env["PAGERDUTY_EVENTS_URL"],
    )
    node = pagerduty.trigger_event(
        summary="escalate", source="resolute", routing_key=CREDENTIALS["pagerduty_routing_key"]
    )
    try:
        result = await run(node, make_ctx(wrong))
    finally:
        await wrong.close()
    assert result.status == "success"


async def test_get_list_update_and_note(
    run: Run, make_ctx: MakeContext, pd: PagerDutyProvider, sandbox: Sandbox
) -> None:
    _, incident_id = await _triggered(run, lambda: make_ctx(pd), "Queue backlog")
    incident = await run(pagerduty.get_incident(incident_id=incident_id), make_ctx(pd))
    assert (incident.status, incident.service_name) == ("triggered", "checkout-api")
    assert [a.summary for a in incident.assignees] == ["Alice Moreau"]

    listed = await run(pagerduty.list_incidents(statuses=["triggered"], limit=500), make_ctx(pd))
    assert incident_id in {i.id for i in listed}

    bob = sandbox.state()["pagerduty"]["users"]["PBOB002"]["id"]
    reassigned = await run(
        pagerduty.update_incident(incident_id=incident_id, assignee_ids=[bob]), make_ctx(pd)
    )
    assert [a.id for a in reassigned.assignees] == [bob]
    acked = await run(
        pagerduty.update_incident(incident_id=incident_id, status="acknowledged"), make_ctx(pd)
    )
    assert acked.status == "acknowledged"
    assert [a.summary for a in acked.acknowledgers] == ["Alice Moreau"]  # the From user

    note = await run(
        pagerduty.add_note(incident_id=incident_id, content="Restarted the consumer."),
        make_ctx(pd),
    )
    assert note.content == "Restarted the consumer."
    resolved = await run(
        pagerduty.update_incident(
            incident_id=incident_id, status="resolved", resolution="auto-remediated"
        ),
        make_ctx(pd),
    )
    assert resolved.status == "resolved"
    stored = sandbox.state()["pagerduty"]
    assert stored["notes"][incident_id][0]["content"] == "Restarted the consumer."
    assert stored["incidents"][incident_id]["resolution_note"] == "auto-remediated"


async def test_list_incidents_follows_pages(
    run: Run,
    make_ctx: MakeContext,
    pd: PagerDutyProvider,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(3):
        await _triggered(run, lambda: make_ctx(pd), f"paged {i}")
    monkeypatch.setattr(sandbox.fakes["pagerduty"], "max_page", 2)
    every = await run(pagerduty.list_incidents(limit=1000), make_ctx(pd))
    assert len(every) == len(sandbox.state()["pagerduty"]["incidents"]) >= 3
    assert len({i.id for i in every}) == len(every)
    three = await run(pagerduty.list_incidents(limit=3), make_ctx(pd))
    assert [i.id for i in three] == [i.id for i in every[:3]]


async def test_oncalls_carry_emails(run: Run, make_ctx: MakeContext, pd: PagerDutyProvider) -> None:
    oncalls = await run(pagerduty.get_oncalls(escalation_policy_ids=["PEP0001"]), make_ctx(pd))
    assert [(o.escalation_level, o.email) for o in oncalls] == [
        (1, "alice@example.com"),
        (2, "bob@example.com"),
    ]
    assert oncalls[0].schedule_name == "Checkout primary"


async def test_rest_failures(
    run: Run, make_ctx: MakeContext, pd: PagerDutyProvider, sandbox: Sandbox
) -> None:
    sandbox.inject("pagerduty", "/oncalls", 500, times=1)
    sandbox.inject("pagerduty", "/oncalls", 429, times=1, retry_after=0)
    assert await run(pagerduty.get_oncalls(), make_ctx(pd))  # 5xx then 429 then success

    with pytest.raises(VendorRequestError) as err:
        await run(pagerduty.get_incident(incident_id="QNOPE00"), make_ctx(pd))
    assert (err.value.status, err.value.vendor_message) == (404, "Not Found (code 2100)")

    sandbox.inject("pagerduty", "/oncalls", 503, times=3)
    with pytest.raises(VendorUnavailableError):
        await run(pagerduty.get_oncalls(), make_ctx(pd))


async def test_unauthorised_and_unconfigured(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    wrong = PagerDutyProvider(api_key="bad", base_url=sandbox_env["PAGERDUTY_BASE_URL"])
    unconfigured = PagerDutyProvider(base_url=sandbox_env["PAGERDUTY_BASE_URL"])
    try:
        with pytest.raises(VendorRequestError, match="401: Authentication failed"):
            await run(pagerduty.get_oncalls(), make_ctx(wrong))
        with pytest.raises(ConfigurationError, match="PAGERDUTY_API_KEY"):
            await run(pagerduty.get_oncalls(), make_ctx(unconfigured))
        with pytest.raises(ConfigurationError, match="PAGERDUTY_FROM_EMAIL"):
            await run(
                pagerduty.add_note(incident_id="Q1", content="x"),
                make_ctx(PagerDutyProvider(api_key="k")),
            )
        with pytest.raises(ConfigurationError, match="needs a PagerDutyProvider"):
            await run(pagerduty.get_oncalls(), make_ctx())
    finally:
        await wrong.close()
        await unconfigured.close()


async def test_missing_from_header_is_the_vendors_message(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    unknown = PagerDutyProvider(
        api_key=sandbox_env["PAGERDUTY_API_KEY"],
        from_email="nobody@example.com",
        base_url=sandbox_env["PAGERDUTY_BASE_URL"],
    )
    try:
        with pytest.raises(VendorRequestError, match=r"no user with email nobody@example\.com"):
            await run(pagerduty.add_note(incident_id="Q000001", content="x"), make_ctx(unknown))
    finally:
        await unknown.close()


def test_update_incident_needs_a_change() -> None:
    node = pagerduty.update_incident(incident_id="Q1")
    with pytest.raises(ValueError, match="needs status, assignee_ids or escalation_level"):
        node.input_adapter.validate_python(node.binding)


def test_provider_secrets_stay_secret() -> None:
    provider = PagerDutyProvider(api_key="k-123456", routing_key="r-123456")
    shown = repr(vars(provider)) + repr(vars(provider.rest)) + repr(vars(provider.events))
    assert "k-123456" not in shown and "r-123456" not in shown


# -- webhooks ----------------------------------------------------------------------------


def _payloads(contract: Callable[[str], Any]) -> dict[str, Any]:
    data = contract("pagerduty/pagerduty-webhook-v3-examples.json")
    return {name: entry["body"] for name, entry in data["payloads"].items()}


@pytest.mark.contracts
def test_real_v3_payloads_parse(contract: Callable[[str], Any]) -> None:
    payloads = _payloads(contract)

    triggered = pagerduty.parse_incident_event(payloads["incident.triggered"])
    assert triggered.event_type == "incident.triggered"
    assert (triggered.incident_id, triggered.incident_number) == ("PFQZPSY", 9)
    assert triggered.title == "Test Incident 3"
    assert (triggered.service_id, triggered.service_name) == ("PA2P440", "pig208")
    assert (triggered.urgency, triggered.priority, triggered.severity) == ("high", None, "critical")
    assert [a.summary for a in triggered.assignees] == ["PIG 208"]
    assert triggered.html_url == "https://pig208.pagerduty.com/incidents/PFQZPSY"
    assert triggered.event_id == "01BZYIL05THJDFF2Y08X9SVMTU"
    assert triggered.occurred_at.isoformat() == "2021-06-04T13:35:29.781000+00:00"
    assert triggered.acknowledged_by is None and triggered.resolved_by is None
    assert "Service: pig208" in triggered.description

    acked = pagerduty.parse_incident_event(payloads["incident.acknowledged"])
    assert acked.status == "acknowledged"
    assert acked.acknowledged_by is not None and acked.acknowledged_by.id == "PJ0LVEB"

    resolved = pagerduty.parse_incident_event(payloads["incident.resolved"])
    assert (resolved.status, resolved.assignees) == ("resolved", [])
    assert resolved.resolved_by is not None and resolved.resolved_by.summary == "PIG 208"

    note = pagerduty.parse_incident_event(payloads["incident.annotated"])
    assert note.incident_id == "Q3B15VLMF3ASBD"
    assert note.title == "Critical: Checkout API High Latency"
    assert note.note == "Running KILL on long-running queries from the reporting-service."

    priority = pagerduty.parse_incident_event(payloads["incident.priority_updated"])
    assert (priority.priority, priority.severity) == ("P1", "critical")
    assert priority.dedup_key == "d3640fbd41094207a1c11e58e46b1662"
    assert [t.summary for t in priority.teams] == ["Engineering"]

    with pytest.raises(PayloadError, match=r"service\.updated"):
        pagerduty.parse_incident_event(payloads["service.updated"])


@pytest.mark.contracts
async def test_parse_webhook_is_a_node_over_the_trigger_payload(
    run: Run, make_ctx: MakeContext, contract: Callable[[str], Any]
) -> None:
    payload = _payloads(contract)["incident.triggered"]
    event = await run(pagerduty.parse_webhook.as_("event"), make_ctx(payload=payload))
    assert isinstance(event, IncidentEvent) and event.incident_id == "PFQZPSY"
    assert pagerduty.parse_webhook.retry.max_attempts == 1


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "no 'event' object"),
        (
            {"event": {"id": "E1", "resource_type": "incident", "data": {"type": "incident"}}},
            "names no incident",
        ),
        (
            {
                "event": {
                    "id": "E1",
                    "resource_type": "incident",
                    "event_type": "incident.triggered",
                    "data": {"id": "P1", "type": "incident"},
                }
            },
            "malformed",
        ),
    ],
)
def test_bad_payloads_are_rejected_for_good(payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(PayloadError, match=problem) as err:
        pagerduty.parse_incident_event(payload)
    assert isinstance(err.value, NonRetryableError)


@pytest.mark.contracts
def test_signature_vectors(contract: Callable[[str], Any]) -> None:
    vectors = contract("pagerduty/pagerduty-webhook-v3-examples.json")["signature_test_vectors"]
    official = vectors["official_go_pagerduty"]
    body = official["body"].encode()
    verifier = pagerduty.webhook_signature([official["secret"]])
    assert verifier.verify(body, {"X-PagerDuty-Signature": official["valid_header"]})
    assert not verifier.verify(body, {"X-PagerDuty-Signature": official["mismatched_header"]})
    assert pagerduty.sign(body, official["secret"]) == official["valid_header"]
    for v in vectors["derived_here"]["vectors"]:
        secret = v.get("secret") or v["secret_held_by_receiver"]
        headers = {} if v["header"] is None else {"x-pagerduty-signature": v["header"]}
        got = pagerduty.webhook_signature([secret]).verify(v["body"].encode(), headers)
        assert got is v["expect_valid"], v["name"]


def test_signatures_support_rotation_without_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"event": {"id": "x"}}'
    header = f"{pagerduty.sign(body, 'new')},{pagerduty.sign(body, 'old')}"
    assert pagerduty.webhook_signature(["old"]).verify(body, {"X-PagerDuty-Signature": header})
    assert pagerduty.webhook_signature(["new", "other"]).verify(
        body, {"X-PAGERDUTY-SIGNATURE": header}
    )
    assert not pagerduty.webhook_signature(["other"]).verify(
        body, {"X-PagerDuty-Signature": header}
    )
    assert not pagerduty.webhook_signature(["old"]).verify(
        body + b" ", {"X-PagerDuty-Signature": header}
    )
    monkeypatch.setenv("PAGERDUTY_WEBHOOK_SECRETS", "a, old")
    assert pagerduty.webhook_signature().verify(body, {"X-PagerDuty-Signature": header})
    assert "old" not in repr(pagerduty.webhook_signature())
    monkeypatch.setenv("PAGERDUTY_WEBHOOK_SECRETS", "")
    with pytest.raises(ConfigurationError, match="PAGERDUTY_WEBHOOK_SECRETS"):
        pagerduty.webhook_signature()
