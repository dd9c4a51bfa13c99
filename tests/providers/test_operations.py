"""Every operation survives a 429 (with Retry-After) and a 5xx on its own request.

Replay-safe requests are retried in place and succeed; requests that are not
(creates, comments, notes, transitions) give the ambiguous 5xx back to the engine as a
retryable failure, and the step's next attempt succeeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator.node import Node, StepContext
from providers import confluence, jira, pagerduty, slack
from providers.confluence import ConfluenceProvider
from providers.errors import VendorUnavailableError
from providers.jira import JiraProvider
from providers.pagerduty import PagerDutyProvider
from providers.sandbox import Sandbox
from providers.slack import SlackProvider

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]


@dataclass
class World:
    providers: tuple[Any, ...]
    dedup_key: str
    incident: str
    issue: str
    channel: str
    ts: str


@pytest.fixture
async def world(
    run: Run,
    make_ctx: MakeContext,
    pd: PagerDutyProvider,
    jira_provider: JiraProvider,
    slack_provider: SlackProvider,
    confluence_provider: ConfluenceProvider,
) -> AsyncIterator[World]:
    providers = (pd, jira_provider, slack_provider, confluence_provider)
    event = await run(pagerduty.trigger_event(summary="ops", source="s"), make_ctx(*providers))
    [incident] = await run(
        pagerduty.list_incidents(dedup_key=event.dedup_key), make_ctx(*providers)
    )
    issue = await run(jira.create_issue(project="OPS", summary="ops"), make_ctx(*providers))
    message = await run(slack.post_message(text="ops"), make_ctx(*providers))
    yield World(providers, event.dedup_key, incident.id, issue.key, message.channel, message.ts)


# (vendor, request path ("*": prefix), method, retried in place, the node)
CASES: dict[str, tuple[str, str, str, bool, Callable[[World], Node]]] = {
    "pagerduty.trigger_event": (
        "pagerduty",
        "/v2/enqueue",
        "POST",
        True,
        lambda w: pagerduty.trigger_event(summary="x", source="y"),
    ),
    "pagerduty.acknowledge_event": (
        "pagerduty",
        "/v2/enqueue",
        "POST",
        True,
        lambda w: pagerduty.acknowledge_event(dedup_key=w.dedup_key),
    ),
    "pagerduty.resolve_event": (
        "pagerduty",
        "/v2/enqueue",
        "POST",
        True,
        lambda w: pagerduty.resolve_event(dedup_key=w.dedup_key),
    ),
    "pagerduty.get_incident": (
        "pagerduty",
        "/incidents/*",
        "GET",
        True,
        lambda w: pagerduty.get_incident(incident_id=w.incident),
    ),
    "pagerduty.list_incidents": (
        "pagerduty",
        "/incidents",
        "GET",
        True,
        lambda w: pagerduty.list_incidents(),
    ),
    "pagerduty.update_incident": (
        "pagerduty",
        "/incidents/*",
        "PUT",
        True,
        lambda w: pagerduty.update_incident(incident_id=w.incident, status="acknowledged"),
    ),
    "pagerduty.add_note": (
        "pagerduty",
        "/incidents/*",
        "POST",
        False,
        lambda w: pagerduty.add_note(incident_id=w.incident, content="note"),
    ),
    "pagerduty.get_oncalls": (
        "pagerduty",
        "/oncalls",
        "GET",
        True,
        lambda w: pagerduty.get_oncalls(),
    ),
    "jira.create_issue": (
        "jira",
        "/rest/api/3/issue",
        "POST",
        False,
        lambda w: jira.create_issue(project="OPS", summary="retried create"),
    ),
    "jira.add_comment": (
        "jira",
        "/rest/api/3/issue/*",
        "POST",
        False,
        lambda w: jira.add_comment(issue_key=w.issue, body="comment"),
    ),
    "jira.transition_issue": (
        "jira",
        "/rest/api/3/issue/*",
        "POST",
        False,
        lambda w: jira.transition_issue(issue_key=w.issue, transition="Start Progress"),
    ),
    "jira.assign_issue": (
        "jira",
        "/rest/api/3/issue/*",
        "PUT",
        True,
        lambda w: jira.assign_issue(issue_key=w.issue, email="alice@example.com"),
    ),
    "jira.get_issue": (
        "jira",
        "/rest/api/3/issue/*",
        "GET",
        True,
        lambda w: jira.get_issue(issue_key=w.issue),
    ),
    "jira.search": (
        "jira",
        "/rest/api/3/search/jql",
        "POST",
        True,
        lambda w: jira.search(jql="project = OPS"),
    ),
    # slack-sdk's own handlers retry 429, 500 and 503 for every method.
    "slack.post_message": (
        "slack",
        "/api/chat.postMessage",
        "POST",
        True,
        lambda w: slack.post_message(text="x"),
    ),
    "slack.update_message": (
        "slack",
        "/api/chat.update",
        "POST",
        True,
        lambda w: slack.update_message(channel=w.channel, ts=w.ts, text="y"),
    ),
    "slack.dm_user": (
        "slack",
        "/api/conversations.open",
        "POST",
        True,
        lambda w: slack.dm_user(email="bob@example.com", text="x"),
    ),
    "slack.lookup_user": (
        "slack",
        "/api/users.lookupByEmail",
        "GET",
        True,
        lambda w: slack.lookup_user(email="bob@example.com"),
    ),
    "confluence.create_page": (
        "confluence",
        "/wiki/api/v2/pages",
        "POST",
        False,
        lambda w: confluence.create_page(space_key="OPS", title=f"Retried {w.issue}", body="<p/>"),
    ),
    "confluence.find_page": (
        "confluence",
        "/wiki/api/v2/pages",
        "GET",
        True,
        lambda w: confluence.find_page(space_key="OPS", title="Operations Home"),
    ),
}


@pytest.mark.parametrize("operation", list(CASES))
async def test_rate_limits_and_server_errors(
    operation: str, run: Run, make_ctx: MakeContext, world: World, sandbox: Sandbox
) -> None:
    vendor, path, method, in_place, build = CASES[operation]
    node = build(world)
    sandbox.inject(vendor, path, 429, method=method, retry_after=0)
    sandbox.inject(vendor, path, 503, method=method)
    ctx = make_ctx(*world.providers)
    if not in_place:
        with pytest.raises(VendorUnavailableError, match="HTTP 503"):
            await run(node, ctx)
    result = await run(node, ctx)  # in place, or the engine's next attempt
    assert result is not None
    assert sandbox.fakes[vendor].faults == []
    hits = [x for x in sandbox.fakes[vendor].traffic if x.method == method and x.injected]
    assert [x.status for x in hits[-2:]] == [429, 503]
