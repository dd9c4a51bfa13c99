"""Jira Cloud (REST v3): create, comment, transition, assign, read and search issues.

``create_issue`` is exactly-once in practice: it labels the issue with a label derived
from the step's idempotency key and, before creating, searches for that label, so a
step re-run after a crash returns the issue the earlier attempt made. Comments are
at-least-once; transitions and assignment set a state and are idempotent (see
``skip_if_status`` for transitions).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from orchestrator.node import Node, RetryPolicy, StepContext

from .adf import to_adf, to_text
from .binding import Bind, provider_node
from .errors import NotFoundError
from .http import AtlassianSettings, RetryConfig, basic_auth_client

__all__ = [
    "Assignment",
    "JiraComment",
    "JiraIssue",
    "JiraProvider",
    "Provider",
    "Transition",
    "add_comment",
    "assign_issue",
    "create_issue",
    "get_issue",
    "idempotency_label",
    "search",
    "transition_issue",
]

_FIELDS = ["summary", "status", "issuetype", "priority", "labels", "assignee", "resolution"]
_PAGE = 100


def _error(body: Any) -> str | None:
    """``{"errorMessages": [...], "errors": {field: message}}``."""
    if not isinstance(body, dict):
        return None
    messages = [str(m) for m in body.get("errorMessages") or []]
    messages += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return "; ".join(messages) or None


class JiraProvider:
    """A Jira Cloud site reached with an account email and API token (HTTP Basic)."""

    name = "jira"

    def __init__(
        self,
        *,
        base_url: str,
        email: str,
        api_token: str | SecretStr,
        retry: RetryConfig | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = basic_auth_client(
            "jira",
            self.base_url,
            email=email,
            api_token=api_token,
            error_message=_error,
            retry=retry,
        )

    @classmethod
    def from_env(cls, retry: RetryConfig | None = None) -> JiraProvider:
        """Read ``JIRA_BASE_URL``, ``JIRA_EMAIL`` and ``JIRA_API_TOKEN``."""
        base_url, email, api_token = AtlassianSettings.read("Jira", "https://<site>.atlassian.net")
        return cls(
            base_url=base_url, email=email, api_token=api_token, retry=retry or RetryConfig()
        )

    def browse_url(self, key: str) -> str:
        return f"{self.base_url}/browse/{key}"

    async def close(self) -> None:
        await self.client.close()


Provider = JiraProvider


def idempotency_label(key: str) -> str:
    """The label marking the issue a step created (labels allow no spaces, so a hash)."""
    return "resolute-" + hashlib.sha1(key.encode()).hexdigest()[:16]


# -- models -----------------------------------------------------------------------------


class JiraIssue(BaseModel):
    id: str
    key: str
    url: str
    summary: str | None = None
    status: str | None = None
    issue_type: str | None = None
    priority: str | None = None
    labels: list[str] = []
    assignee: str | None = None
    resolution: str | None = None
    description: str | None = None


class JiraComment(BaseModel):
    id: str
    issue_key: str
    url: str
    created: datetime | None = None


class Transition(BaseModel):
    issue_key: str
    transition_id: str | None
    transition: str
    status: str | None
    changed: bool


class Assignment(BaseModel):
    issue_key: str
    account_id: str
    display_name: str | None = None


def _name(value: Any) -> str | None:
    return value.get("name") or value.get("displayName") if isinstance(value, dict) else None


def _issue(jira: JiraProvider, data: dict[str, Any]) -> JiraIssue:
    fields = data.get("fields") or {}
    description = fields.get("description")
    return JiraIssue(
        id=str(data["id"]),
        key=data["key"],
        url=jira.browse_url(data["key"]),
        summary=fields.get("summary"),
        status=_name(fields.get("status")),
        issue_type=_name(fields.get("issuetype")),
        priority=_name(fields.get("priority")),
        labels=fields.get("labels") or [],
        assignee=_name(fields.get("assignee")),
        resolution=_name(fields.get("resolution")),
        description=to_text(description) if description is not None else None,
    )


async def _search(jira: JiraProvider, jql: str, fields: list[str], limit: int) -> list[JiraIssue]:
    """Enhanced search (``POST /search/jql``), following ``nextPageToken``."""
    issues: list[JiraIssue] = []
    token: str | None = None
    while len(issues) < limit:
        body: dict[str, Any] = {
            "jql": jql,
            "fields": fields,
            "maxResults": min(_PAGE, limit - len(issues)),
        }
        if token:
            body["nextPageToken"] = token
        # A search changes nothing, so this POST is safe to replay.
        answer = await jira.client.request(
            "POST", "/rest/api/3/search/jql", operation="search", json_body=body, replay_safe=True
        )
        issues.extend(_issue(jira, i) for i in answer.get("issues") or [])
        token = answer.get("nextPageToken")
        if answer.get("isLast", not token) or not token:
            break
    return issues[:limit]


# -- create_issue ----------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def _quote(value: str) -> str:
    """A JQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class CreateIssueInput(BaseModel):
    project: str = Field(min_length=1)
    summary: str = Field(min_length=1, max_length=255)
    issue_type: str = "Task"
    description: str | dict[str, Any] | None = None
    priority: str | None = None
    labels: list[str] = []
    components: list[str] = []
    fields: dict[str, Any] = {}

    @field_validator("labels")
    @classmethod
    def _no_spaces(cls, labels: list[str]) -> list[str]:
        # Jira rejects labels with spaces; "needs review" becomes "needs-review".
        return [_SPACES.sub("-", label.strip()) for label in labels if label.strip()]


async def _create_issue(ctx: StepContext, inp: CreateIssueInput) -> JiraIssue:
    jira = ctx.provider(JiraProvider)
    label = idempotency_label(ctx.idempotency_key)
    jql = f"project = {_quote(inp.project)} AND labels = {_quote(label)}"
    found = await _search(jira, jql, [*_FIELDS, "description"], 1)
    if found:
        ctx.logger.info("jira: %s was created by an earlier attempt of this step", found[0].key)
        return found[0]
    labels = [*dict.fromkeys([*inp.labels, label])]
    fields: dict[str, Any] = {
        **inp.fields,
        "project": {"key": inp.project},
        "issuetype": {"name": inp.issue_type},
        "summary": inp.summary,
        "labels": labels,
    }
    if inp.description is not None:
        fields["description"] = to_adf(inp.description)
    if inp.priority:
        fields["priority"] = {"name": inp.priority}
    if inp.components:
        fields["components"] = [{"name": c} for c in inp.components]
    # Not replay-safe: after an ambiguous failure the step retries and probes first.
    created = await jira.client.request(
        "POST",
        "/rest/api/3/issue",
        operation="create issue",
        json_body={"fields": fields},
        replay_safe=False,
    )
    return JiraIssue(
        id=str(created["id"]),
        key=created["key"],
        url=jira.browse_url(created["key"]),
        summary=inp.summary,
        issue_type=inp.issue_type,
        priority=inp.priority,
        labels=labels,
        description=to_text(fields.get("description")) if inp.description is not None else None,
    )


def create_issue(
    *,
    project: Bind[str],
    summary: Bind[str],
    issue_type: Bind[str] | None = None,
    description: Bind[str] | Bind[dict[str, Any]] | None = None,
    priority: Bind[str] | None = None,
    labels: Bind[list[str]] | None = None,
    components: Bind[list[str]] | None = None,
    fields: Bind[dict[str, Any]] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Create an issue once per step (label probe); ``description`` is text or ADF."""
    return provider_node(
        "jira.create_issue",
        _create_issue,
        CreateIssueInput,
        JiraIssue,
        {
            "project": project,
            "summary": summary,
            "issue_type": issue_type,
            "description": description,
            "priority": priority,
            "labels": labels,
            "components": components,
            "fields": fields,
        },
        retry=retry,
        timeout=timeout,
    )


# -- add_comment -------------------------------------------------------------------------------


class AddCommentInput(BaseModel):
    issue_key: str = Field(min_length=1)
    body: str | dict[str, Any]


async def _add_comment(ctx: StepContext, inp: AddCommentInput) -> JiraComment:
    jira = ctx.provider(JiraProvider)
    answer = await jira.client.request(
        "POST",
        f"/rest/api/3/issue/{inp.issue_key}/comment",
        operation="add comment",
        json_body={"body": to_adf(inp.body)},
        replay_safe=False,
    )
    comment_id = str(answer["id"])
    return JiraComment(
        id=comment_id,
        issue_key=inp.issue_key,
        url=f"{jira.browse_url(inp.issue_key)}?focusedCommentId={comment_id}",
        created=answer.get("created"),
    )


def add_comment(
    *,
    issue_key: Bind[str],
    body: Bind[str] | Bind[dict[str, Any]],
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Comment on an issue; ``body`` is markdown-ish text or ADF. At-least-once."""
    return provider_node(
        "jira.add_comment",
        _add_comment,
        AddCommentInput,
        JiraComment,
        {"issue_key": issue_key, "body": body},
        retry=retry,
        timeout=timeout,
    )


# -- transition_issue ------------------------------------------------------------------------


class TransitionInput(BaseModel):
    issue_key: str = Field(min_length=1)
    transition: str = Field(min_length=1)
    resolution: str | None = None
    comment: str | dict[str, Any] | None = None
    skip_if_status: list[str] = []


async def _transition_issue(ctx: StepContext, inp: TransitionInput) -> Transition:
    jira = ctx.provider(JiraProvider)
    path = f"/rest/api/3/issue/{inp.issue_key}"
    if inp.skip_if_status:
        current = await jira.client.request(
            "GET", path, operation="get issue", params={"fields": "status"}
        )
        status = _name(current.get("fields", {}).get("status"))
        if status and status.casefold() in {s.casefold() for s in inp.skip_if_status}:
            return Transition(
                issue_key=inp.issue_key,
                transition_id=None,
                transition=inp.transition,
                status=status,
                changed=False,
            )
    answer = await jira.client.request("GET", f"{path}/transitions", operation="list transitions")
    available = answer.get("transitions") or []
    wanted = inp.transition.casefold()
    match = next((t for t in available if str(t.get("name", "")).casefold() == wanted), None)
    match = match or next((t for t in available if str(t.get("id")) == inp.transition), None)
    if match is None:
        names = ", ".join(repr(t.get("name")) for t in available) or "none"
        raise NotFoundError(
            f"jira: {inp.issue_key} has no transition {inp.transition!r} from its current "
            f"status (available: {names})"
        )
    body: dict[str, Any] = {"transition": {"id": str(match["id"])}}
    if inp.resolution:
        body["fields"] = {"resolution": {"name": inp.resolution}}
    if inp.comment is not None:
        body["update"] = {"comment": [{"add": {"body": to_adf(inp.comment)}}]}
    # Not replay-safe: a repeated transition is rejected once the first one took effect.
    await jira.client.request(
        "POST", f"{path}/transitions", operation="transition issue", json_body=body
    )
    return Transition(
        issue_key=inp.issue_key,
        transition_id=str(match["id"]),
        transition=str(match.get("name")),
        status=_name(match.get("to")),
        changed=True,
    )


def transition_issue(
    *,
    issue_key: Bind[str],
    transition: Bind[str],
    resolution: Bind[str] | None = None,
    comment: Bind[str] | Bind[dict[str, Any]] | None = None,
    skip_if_status: Bind[list[str]] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Move an issue through its workflow by transition name (resolved to an id).

    ``skip_if_status``: statuses in which the transition counts as already done, so a
    re-run after a crash succeeds instead of failing on a transition no longer offered.
    """
    return provider_node(
        "jira.transition_issue",
        _transition_issue,
        TransitionInput,
        Transition,
        {
            "issue_key": issue_key,
            "transition": transition,
            "resolution": resolution,
            "comment": comment,
            "skip_if_status": skip_if_status,
        },
        retry=retry,
        timeout=timeout,
    )


# -- assign_issue -----------------------------------------------------------------------------


class AssignInput(BaseModel):
    issue_key: str = Field(min_length=1)
    email: str = Field(min_length=3)


async def _assign_issue(ctx: StepContext, inp: AssignInput) -> Assignment:
    jira = ctx.provider(JiraProvider)
    users = await jira.client.request(
        "GET", "/rest/api/3/user/search", operation="find user", params={"query": inp.email}
    )
    wanted = inp.email.casefold()
    exact = [u for u in users if str(u.get("emailAddress", "")).casefold() == wanted]
    # Sites may hide email addresses; a single hit for the query is then the user.
    user = exact[0] if exact else users[0] if len(users) == 1 else None
    if user is None:
        raise NotFoundError(f"jira: no single user matches {inp.email!r} ({len(users)} found)")
    await jira.client.request(
        "PUT",
        f"/rest/api/3/issue/{inp.issue_key}/assignee",
        operation="assign issue",
        json_body={"accountId": user["accountId"]},
    )
    return Assignment(
        issue_key=inp.issue_key,
        account_id=user["accountId"],
        display_name=user.get("displayName"),
    )


def assign_issue(
    *,
    issue_key: Bind[str],
    email: Bind[str],
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Assign an issue to the user with this email (user search → accountId)."""
    return provider_node(
        "jira.assign_issue",
        _assign_issue,
        AssignInput,
        Assignment,
        {"issue_key": issue_key, "email": email},
        retry=retry,
        timeout=timeout,
    )


# -- get_issue / search ---------------------------------------------------------------------


class GetIssueInput(BaseModel):
    issue_key: str = Field(min_length=1)


class SearchInput(BaseModel):
    jql: str = Field(min_length=1)
    fields: list[str] = _FIELDS
    limit: int = Field(50, ge=1, le=5000)


async def _get_issue(ctx: StepContext, inp: GetIssueInput) -> JiraIssue:
    jira = ctx.provider(JiraProvider)
    answer = await jira.client.request(
        "GET",
        f"/rest/api/3/issue/{inp.issue_key}",
        operation="get issue",
        params={"fields": ",".join([*_FIELDS, "description"])},
    )
    return _issue(jira, answer)


async def _search_node(ctx: StepContext, inp: SearchInput) -> list[JiraIssue]:
    return await _search(ctx.provider(JiraProvider), inp.jql, inp.fields, inp.limit)


def get_issue(
    *, issue_key: Bind[str], retry: RetryPolicy | None = None, timeout: float | None = None
) -> Node:
    """Read one issue (summary, status, priority, labels, assignee, description text)."""
    return provider_node(
        "jira.get_issue",
        _get_issue,
        GetIssueInput,
        JiraIssue,
        {"issue_key": issue_key},
        retry=retry,
        timeout=timeout,
    )


def search(
    *,
    jql: Bind[str],
    fields: Bind[list[str]] | None = None,
    limit: Bind[int] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Issues matching ``jql`` (``POST /search/jql``, ``nextPageToken`` pages) up to ``limit``."""
    return provider_node(
        "jira.search",
        _search_node,
        SearchInput,
        list[JiraIssue],
        {"jql": jql, "fields": fields, "limit": limit},
        retry=retry,
        timeout=timeout,
    )
