"""Jira nodes against the sandbox, including the exactly-once create."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.errors import NonRetryableError
from orchestrator.node import StepContext
from orchestrator.refs import Output, Template
from orchestrator.state import FlowState
from providers import jira
from providers.errors import NotFoundError, VendorRequestError, VendorUnavailableError
from providers.jira import JiraProvider
from providers.sandbox import Sandbox

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]


def _priority(state: FlowState) -> str:
    return {"critical": "Highest", "warning": "Medium"}[state.raw("event")["severity"]]


def _create(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "project": "OPS",
        "issue_type": "Incident",
        "summary": Output("event.title"),
        "description": Template("{event.title}\n\n- service: {event.service}"),
        "priority": _priority,
        "labels": ["incident", "automated"],
        "components": ["checkout-api"],
    }
    return jira.create_issue(**{**fields, **overrides})


EVENT = {"title": "Checkout API latency", "service": "checkout-api", "severity": "critical"}


async def test_create_issue_maps_every_field(
    run: Run, make_ctx: MakeContext, jira_provider: JiraProvider, sandbox: Sandbox
) -> None:
    ctx = make_ctx(jira_provider, outputs={"event": EVENT})
    issue = await run(_create(fields={"customfield_10010": "PFQZPSY"}), ctx)
    stored = sandbox.state()["jira"]["issues"][issue.key]["fields"]
    assert stored["summary"] == "Checkout API latency"
    assert (stored["issuetype"]["name"], stored["priority"]["name"]) == ("Incident", "Highest")
    assert stored["components"][0]["name"] == "checkout-api"
    assert stored["customfield_10010"] == "PFQZPSY"
    label = jira.idempotency_label(ctx.idempotency_key)
    assert stored["labels"] == ["incident", "automated", label]
    assert stored["description"]["content"][1]["type"] == "bulletList"
    assert issue.url == f"{jira_provider.base_url}/browse/{issue.key}"


async def test_create_issue_rerun_after_a_crash_creates_one_issue(
    run: Run, make_ctx: MakeContext, jira_provider: JiraProvider, sandbox: Sandbox
) -> None:
    ctx = make_ctx(jira_provider, outputs={"event": EVENT})
    # The create reaches Jira but the answer is lost: the worker could have crashed here.
    sandbox.inject("jira", "/rest/api/3/issue", method="POST", disconnect="after")
    with pytest.raises(VendorUnavailableError):
        await run(_create(), ctx)
    same_step = {"run_id": ctx.run_id, "outputs": {"event": EVENT}}
    retried = await run(_create(), make_ctx(jira_provider, attempt=2, **same_step))
    again = await run(_create(), make_ctx(jira_provider, attempt=3, **same_step))
    label = jira.idempotency_label(ctx.idempotency_key)
    made = [i for i in sandbox.state()["jira"]["issues"].values() if label in i["fields"]["labels"]]
    assert len(made) == 1
    assert retried.key == again.key == made[0]["key"]
    assert retried.description and retried.description.startswith("Checkout API latency")
    # A different step of the same run makes its own issue.
    other = await run(_create(), make_ctx(jira_provider, node_path="1", **same_step))
    assert other.key != retried.key


def test_labels_cannot_hold_spaces() -> None:
    node = jira.create_issue(project="OPS", summary="s", labels=["needs review", " ", "a  b"])
    assert node.input_adapter.validate_python(node.binding).labels == ["needs-review", "a-b"]


async def test_comment_assign_transition_get_and_search(
    run: Run, make_ctx: MakeContext, jira_provider: JiraProvider, sandbox: Sandbox
) -> None:
    issue = await run(_create(), make_ctx(jira_provider, outputs={"event": EVENT}))
    comment = await run(
        jira.add_comment(issue_key=issue.key, body="**Diagnostics**\n- db: ok\n- api: slow"),
        make_ctx(jira_provider),
    )
    assert comment.url.endswith(f"?focusedCommentId={comment.id}")
    assignment = await run(
        jira.assign_issue(issue_key=issue.key, email="BOB@example.com"), make_ctx(jira_provider)
    )
    assert assignment.display_name == "Bob Okafor"

    done = await run(
        jira.transition_issue(
            issue_key=issue.key,
            transition="resolve",
            resolution="Auto-remediated",
            comment="Restarted the pool.",
        ),
        make_ctx(jira_provider),
    )
    assert (done.transition, done.status, done.changed) == ("Resolve", "Resolved", True)

    got = await run(jira.get_issue(issue_key=issue.key), make_ctx(jira_provider))
    assert (got.status, got.resolution, got.assignee) == (
        "Resolved",
        "Auto-remediated",
        "Bob Okafor",
    )
    assert got.description and "service: checkout-api" in got.description
    comments = sandbox.state()["jira"]["comments"][issue.key]
    assert [c["body"]["content"][0]["content"][0]["text"] for c in comments] == [
        "Diagnostics",
        "Restarted the pool.",
    ]

    # A re-run of the transition after a crash: already resolved, nothing to do.
    skipped = await run(
        jira.transition_issue(
            issue_key=issue.key, transition="Resolve", skip_if_status=["Resolved"]
        ),
        make_ctx(jira_provider),
    )
    assert skipped.changed is False
    with pytest.raises(NotFoundError, match=r"no transition 'Resolve'.*'Reopen'"):
        await run(
            jira.transition_issue(issue_key=issue.key, transition="Resolve"),
            make_ctx(jira_provider),
        )

    found = await run(
        jira.search(jql=f'project = OPS AND status = "Resolved" AND key = {issue.key}'),
        make_ctx(jira_provider),
    )
    assert [i.key for i in found] == [issue.key]


async def test_search_follows_next_page_tokens(
    run: Run,
    make_ctx: MakeContext,
    jira_provider: JiraProvider,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(5):
        await run(_create(labels=["paging"]), make_ctx(jira_provider, outputs={"event": EVENT}))
    monkeypatch.setattr(sandbox.fakes["jira"], "max_page", 2)
    traffic = sandbox.fakes["jira"].traffic
    before = len(traffic)
    found = await run(jira.search(jql="labels = paging", limit=5), make_ctx(jira_provider))
    pages = [json.loads(x.body) for x in traffic[before:]]
    assert len({i.key for i in found}) == 5
    assert [p.get("nextPageToken") is not None for p in pages] == [False, True, True]
    assert [p["maxResults"] for p in pages] == [5, 3, 1]


async def test_failures_surface_jira_messages(
    run: Run, make_ctx: MakeContext, jira_provider: JiraProvider, sandbox: Sandbox
) -> None:
    with pytest.raises(VendorRequestError) as err:
        await run(jira.get_issue(issue_key="OPS-99999"), make_ctx(jira_provider))
    assert err.value.status == 404
    assert "Issue does not exist" in err.value.vendor_message

    with pytest.raises(VendorRequestError, match="priority: Specify the Priority"):
        await run(
            jira.create_issue(project="OPS", summary="x", priority="Urgent!"),
            make_ctx(jira_provider),
        )
    with pytest.raises(VendorRequestError, match="Error in the JQL Query"):
        await run(jira.search(jql="project = OPS OR labels = x"), make_ctx(jira_provider))
    with pytest.raises(NotFoundError, match="no single user matches"):
        await run(
            jira.assign_issue(issue_key="OPS-1", email="ghost@example.com"),
            make_ctx(jira_provider),
        )

    sandbox.inject("jira", "/rest/api/3/search/jql", 429, times=1, retry_after=0)
    sandbox.inject("jira", "/rest/api/3/search/jql", 500, times=1)
    assert isinstance(await run(jira.search(jql="project = OPS"), make_ctx(jira_provider)), list)


async def test_wrong_credentials_are_401(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    wrong = JiraProvider(
        base_url=sandbox_env["JIRA_BASE_URL"], email="resolute-bot@example.com", api_token="nope"
    )
    try:
        with pytest.raises(VendorRequestError) as err:
            await run(jira.get_issue(issue_key="OPS-1"), make_ctx(wrong))
    finally:
        await wrong.close()
    assert err.value.status == 401 and isinstance(err.value, NonRetryableError)
    assert "not authenticated" in err.value.vendor_message


def test_from_env_explains_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception, match="JIRA_BASE_URL"):
        JiraProvider.from_env()
