"""PagerDuty: Events API v2, REST API v2 incidents/notes/on-calls, and v3 webhooks.

``trigger_event`` defaults its ``dedup_key`` to the step's idempotency key, so a step that
runs again after a crash de-duplicates into the same alert. ``acknowledge_event``,
``resolve_event`` and ``update_incident`` set a state and are naturally idempotent;
``add_note`` is at-least-once (PagerDuty has no idempotency key for notes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigurationError
from orchestrator.node import Node, RetryPolicy, StepContext
from orchestrator.refs import INPUT_ALIAS, Output
from orchestrator.verify import HmacSignature, pagerduty_v3

from .binding import Bind, provider_node
from .errors import PayloadError
from .http import HttpClient, Query, Redactor, RetryConfig

__all__ = [
    "EventResult",
    "Incident",
    "IncidentEvent",
    "Note",
    "OnCall",
    "PagerDutyProvider",
    "Provider",
    "Reference",
    "Severity",
    "acknowledge_event",
    "add_note",
    "get_incident",
    "get_oncalls",
    "list_incidents",
    "parse_incident_event",
    "parse_webhook",
    "resolve_event",
    "sign",
    "trigger_event",
    "update_incident",
    "webhook_signature",
]

Severity = Literal["critical", "error", "warning", "info"]
IncidentStatus = Literal["triggered", "acknowledged", "resolved"]

REST_URL = "https://api.pagerduty.com"
EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_PAGE = 100  # PagerDuty's largest page


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAGERDUTY_")

    api_key: SecretStr | None = None
    routing_key: SecretStr | None = None
    from_email: str | None = None
    base_url: str = REST_URL
    events_url: str = EVENTS_URL
    webhook_secrets: str = ""


def _rest_error(body: Any) -> str | None:
    """``{"error": {"message", "code", "errors": [...]}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    details = [str(e) for e in error.get("errors") or []]
    message = str(error.get("message") or "")
    code = f" (code {error['code']})" if error.get("code") is not None else ""
    return "; ".join([message, *details]).strip("; ") + code


def _events_error(body: Any) -> str | None:
    """``{"status", "message", "errors": [...]}``."""
    if not isinstance(body, dict) or "message" not in body:
        return None
    return "; ".join([str(body["message"]), *(str(e) for e in body.get("errors") or [])])


class PagerDutyProvider:
    """Credentials and HTTP clients for PagerDuty; register with ``with_providers``."""

    name = "pagerduty"

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        routing_key: str | SecretStr | None = None,
        from_email: str | None = None,
        base_url: str = REST_URL,
        events_url: str = EVENTS_URL,
        retry: RetryConfig | None = None,
    ) -> None:
        self.api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.routing_key = SecretStr(routing_key) if isinstance(routing_key, str) else routing_key
        self.from_email = from_email
        redact = Redactor([self.api_key, self.routing_key])
        token = self.api_key.get_secret_value() if self.api_key else None
        self.rest = HttpClient(
            "pagerduty",
            base_url,
            error_message=_rest_error,
            retry=retry,
            auth_headers={"Authorization": SecretStr(f"Token token={token}")} if token else None,
            headers={
                "Accept": "application/vnd.pagerduty+json;version=2",
                "Content-Type": "application/json",
            },
            redact=redact,
        )
        self.events = HttpClient(
            "pagerduty-events", events_url, error_message=_events_error, retry=retry, redact=redact
        )

    @classmethod
    def from_env(cls, retry: RetryConfig | None = None) -> PagerDutyProvider:
        """Read ``PAGERDUTY_{API_KEY,ROUTING_KEY,FROM_EMAIL,BASE_URL,EVENTS_URL}``."""
        env = _Env()
        return cls(
            api_key=env.api_key,
            routing_key=env.routing_key,
            from_email=env.from_email,
            base_url=env.base_url,
            events_url=env.events_url,
            retry=retry or RetryConfig(),
        )

    def require(self, what: Literal["api_key", "routing_key", "from_email"]) -> str:
        """The setting an operation needs (secrets revealed), or a ConfigurationError."""
        value: SecretStr | str | None = getattr(self, what)
        if not value:
            raise ConfigurationError(
                f"PagerDuty {what} is not configured: set PAGERDUTY_{what.upper()} or pass "
                f"PagerDutyProvider({what}=...)"
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    async def close(self) -> None:
        await self.rest.close()
        await self.events.close()


Provider = PagerDutyProvider


# -- models -----------------------------------------------------------------------------


class Reference(BaseModel):
    """A PagerDuty object reference (user, service, policy, team)."""

    id: str
    summary: str | None = None
    html_url: str | None = None


class EventResult(BaseModel):
    status: str
    message: str
    dedup_key: str


class Incident(BaseModel):
    id: str
    number: int | None = None
    title: str
    status: IncidentStatus
    urgency: str | None = None
    priority: str | None = None
    service_id: str | None = None
    service_name: str | None = None
    dedup_key: str | None = None
    html_url: str | None = None
    created_at: datetime | None = None
    assignees: list[Reference] = []
    acknowledgers: list[Reference] = []


class Note(BaseModel):
    id: str
    content: str
    created_at: datetime | None = None
    user: Reference | None = None


class OnCall(BaseModel):
    user_id: str
    name: str | None = None
    email: str | None = None
    escalation_level: int | None = None
    escalation_policy_id: str | None = None
    escalation_policy_name: str | None = None
    schedule_id: str | None = None
    schedule_name: str | None = None
    start: datetime | None = None
    end: datetime | None = None


class IncidentEvent(BaseModel):
    """A PagerDuty v3 webhook about an incident, flattened for flows."""

    event_id: str
    event_type: str
    occurred_at: datetime
    incident_id: str
    incident_number: int | None = None
    title: str
    description: str
    status: IncidentStatus | None = None
    urgency: str | None = None
    priority: str | None = None
    severity: Severity
    service_id: str | None = None
    service_name: str | None = None
    escalation_policy_id: str | None = None
    dedup_key: str | None = None
    assignees: list[Reference] = []
    teams: list[Reference] = []
    agent: Reference | None = None
    acknowledged_by: Reference | None = None
    resolved_by: Reference | None = None
    html_url: str | None = None
    note: str | None = None


def _ref(value: Any) -> Reference | None:
    return Reference.model_validate(value) if isinstance(value, dict) and "id" in value else None


def _refs(values: Any) -> list[Reference]:
    return [r for r in map(_ref, values or []) if r is not None]


def _incident(data: dict[str, Any]) -> Incident:
    service = data.get("service") or {}
    return Incident(
        id=data["id"],
        number=data.get("incident_number"),
        title=data.get("title") or data.get("summary") or "",
        status=data["status"],
        urgency=data.get("urgency"),
        priority=(data.get("priority") or {}).get("summary"),
        service_id=service.get("id"),
        service_name=service.get("summary") or service.get("name"),
        dedup_key=data.get("incident_key"),
        html_url=data.get("html_url"),
        created_at=data.get("created_at"),
        assignees=_refs(a.get("assignee") for a in data.get("assignments") or []),
        acknowledgers=_refs(a.get("acknowledger") for a in data.get("acknowledgements") or []),
    )


# -- Events API v2 ------------------------------------------------------------------------


class Link(BaseModel):
    href: str
    text: str | None = None


class TriggerEventInput(BaseModel):
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1)
    severity: Severity = "error"
    dedup_key: str | None = Field(None, min_length=1, max_length=255)
    component: str | None = None
    group: str | None = None
    event_class: str | None = None
    custom_details: dict[str, Any] | None = None
    links: list[Link] = []
    timestamp: datetime | None = None
    # Another service's integration key (escalations); default: the provider's.
    routing_key: SecretStr | None = None


class EventActionInput(BaseModel):
    dedup_key: str = Field(min_length=1, max_length=255)
    routing_key: SecretStr | None = None


async def _enqueue(
    ctx: StepContext, body: dict[str, Any], routing_key: SecretStr | None
) -> EventResult:
    pd = ctx.provider(PagerDutyProvider)
    body["routing_key"] = (
        routing_key.get_secret_value() if routing_key else pd.require("routing_key")
    )
    # A dedup_key makes enqueue idempotent, so every event may be retried in place.
    answer = await pd.events.request(
        "POST", "", operation=f"{body['event_action']} event", json_body=body, replay_safe=True
    )
    return EventResult.model_validate(answer)


async def _trigger_event(ctx: StepContext, inp: TriggerEventInput) -> EventResult:
    payload: dict[str, Any] = {
        "summary": inp.summary,
        "source": inp.source,
        "severity": inp.severity,
        "component": inp.component,
        "group": inp.group,
        "class": inp.event_class,
        "custom_details": inp.custom_details,
        "timestamp": inp.timestamp.isoformat() if inp.timestamp else None,
    }
    body: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": inp.dedup_key or ctx.idempotency_key,
        "payload": {k: v for k, v in payload.items() if v is not None},
        "client": "Resolute",
    }
    if inp.links:
        body["links"] = [link.model_dump(exclude_none=True) for link in inp.links]
    return await _enqueue(ctx, body, inp.routing_key)


def _event_action(action: str) -> Callable[[StepContext, EventActionInput], Awaitable[EventResult]]:
    async def send(ctx: StepContext, inp: EventActionInput) -> EventResult:
        body = {"event_action": action, "dedup_key": inp.dedup_key}
        return await _enqueue(ctx, body, inp.routing_key)

    return send


def _event_action_node(
    action: str,
    dedup_key: Bind[str],
    routing_key: Bind[str] | None,
    retry: RetryPolicy | None,
    timeout: float | None,
) -> Node:
    return provider_node(
        f"pagerduty.{action}_event",
        _event_action(action),
        EventActionInput,
        EventResult,
        {"dedup_key": dedup_key, "routing_key": routing_key},
        retry=retry,
        timeout=timeout,
    )


def trigger_event(
    *,
    summary: Bind[str],
    source: Bind[str],
    severity: Bind[Severity] | None = None,
    dedup_key: Bind[str] | None = None,
    component: Bind[str] | None = None,
    group: Bind[str] | None = None,
    event_class: Bind[str] | None = None,
    custom_details: Bind[dict[str, Any]] | None = None,
    links: Bind[list[dict[str, str]]] | None = None,
    timestamp: Bind[datetime] | None = None,
    routing_key: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Trigger an alert (Events API v2); ``dedup_key`` defaults to the step's key,
    ``routing_key`` to the provider's (pass another service's key to page it)."""
    return provider_node(
        "pagerduty.trigger_event",
        _trigger_event,
        TriggerEventInput,
        EventResult,
        {
            "summary": summary,
            "source": source,
            "severity": severity,
            "dedup_key": dedup_key,
            "component": component,
            "group": group,
            "event_class": event_class,
            "custom_details": custom_details,
            "links": links,
            "timestamp": timestamp,
            "routing_key": routing_key,
        },
        retry=retry,
        timeout=timeout,
    )


def acknowledge_event(
    *,
    dedup_key: Bind[str],
    routing_key: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Acknowledge the alert with ``dedup_key`` (Events API v2)."""
    return _event_action_node("acknowledge", dedup_key, routing_key, retry, timeout)


def resolve_event(
    *,
    dedup_key: Bind[str],
    routing_key: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Resolve the alert with ``dedup_key`` (Events API v2)."""
    return _event_action_node("resolve", dedup_key, routing_key, retry, timeout)


# -- REST API v2 ---------------------------------------------------------------------------


class IncidentInput(BaseModel):
    incident_id: str = Field(min_length=1)


class ListIncidentsInput(BaseModel):
    statuses: list[IncidentStatus] = []
    service_ids: list[str] = []
    dedup_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(100, ge=1, le=10_000)


class UpdateIncidentInput(BaseModel):
    incident_id: str = Field(min_length=1)
    status: Literal["acknowledged", "resolved"] | None = None
    assignee_ids: list[str] = []
    escalation_level: int | None = Field(None, ge=1)
    resolution: str | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateIncidentInput:
        if self.status is None and not self.assignee_ids and self.escalation_level is None:
            raise ValueError("update_incident needs status, assignee_ids or escalation_level")
        return self


class AddNoteInput(BaseModel):
    incident_id: str = Field(min_length=1)
    content: str = Field(min_length=1)


class OnCallsInput(BaseModel):
    escalation_policy_ids: list[str] = []
    schedule_ids: list[str] = []
    user_ids: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    earliest: bool = True
    limit: int = Field(100, ge=1, le=10_000)


async def _paged(
    pd: PagerDutyProvider, path: str, key: str, params: list[tuple[str, str | int]], limit: int
) -> list[dict[str, Any]]:
    """Classic offset pagination until ``more`` is false or ``limit`` items are read."""
    items: list[dict[str, Any]] = []
    while len(items) < limit:
        page: Query = [*params, ("limit", min(_PAGE, limit - len(items))), ("offset", len(items))]
        answer = await pd.rest.request("GET", path, operation=f"list {key}", params=page)
        items.extend(answer.get(key) or [])
        if not answer.get("more") or not answer.get(key):
            break
    return items[:limit]


async def _get_incident(ctx: StepContext, inp: IncidentInput) -> Incident:
    pd = ctx.provider(PagerDutyProvider)
    pd.require("api_key")
    answer = await pd.rest.request("GET", f"/incidents/{inp.incident_id}", operation="get incident")
    return _incident(answer["incident"])


async def _list_incidents(ctx: StepContext, inp: ListIncidentsInput) -> list[Incident]:
    pd = ctx.provider(PagerDutyProvider)
    pd.require("api_key")
    params: list[tuple[str, str | int]] = [("statuses[]", s) for s in inp.statuses]
    params += [("service_ids[]", s) for s in inp.service_ids]
    if inp.dedup_key:
        params.append(("incident_key", inp.dedup_key))
    params += [(k, v.isoformat()) for k, v in (("since", inp.since), ("until", inp.until)) if v]
    return [_incident(i) for i in await _paged(pd, "/incidents", "incidents", params, inp.limit)]


async def _update_incident(ctx: StepContext, inp: UpdateIncidentInput) -> Incident:
    pd = ctx.provider(PagerDutyProvider)
    pd.require("api_key")
    change: dict[str, Any] = {"type": "incident_reference"}
    if inp.status:
        change["status"] = inp.status
    if inp.resolution and inp.status == "resolved":
        change["resolution"] = inp.resolution
    if inp.assignee_ids:
        change["assignments"] = [
            {"assignee": {"id": u, "type": "user_reference"}} for u in inp.assignee_ids
        ]
    if inp.escalation_level is not None:
        change["escalation_level"] = inp.escalation_level
    answer = await pd.rest.request(
        "PUT",
        f"/incidents/{inp.incident_id}",
        operation="update incident",
        json_body={"incident": change},
        headers={"From": pd.require("from_email")},
    )
    return _incident(answer["incident"])


async def _add_note(ctx: StepContext, inp: AddNoteInput) -> Note:
    pd = ctx.provider(PagerDutyProvider)
    pd.require("api_key")
    answer = await pd.rest.request(
        "POST",
        f"/incidents/{inp.incident_id}/notes",
        operation="add note",
        json_body={"note": {"content": inp.content}},
        headers={"From": pd.require("from_email")},
    )
    note = answer["note"]
    return Note(
        id=note["id"],
        content=note["content"],
        created_at=note.get("created_at"),
        user=_ref(note.get("user")),
    )


async def _get_oncalls(ctx: StepContext, inp: OnCallsInput) -> list[OnCall]:
    pd = ctx.provider(PagerDutyProvider)
    pd.require("api_key")
    # include[]=users expands each on-call's user with its email address.
    params: list[tuple[str, str | int]] = [("include[]", "users")]
    params += [("escalation_policy_ids[]", i) for i in inp.escalation_policy_ids]
    params += [("schedule_ids[]", i) for i in inp.schedule_ids]
    params += [("user_ids[]", i) for i in inp.user_ids]
    params += [(k, v.isoformat()) for k, v in (("since", inp.since), ("until", inp.until)) if v]
    if inp.earliest:
        params.append(("earliest", "true"))
    oncalls = []
    for item in await _paged(pd, "/oncalls", "oncalls", params, inp.limit):
        user = item.get("user") or {}
        policy = item.get("escalation_policy") or {}
        schedule = item.get("schedule") or {}
        oncalls.append(
            OnCall(
                user_id=user["id"],
                name=user.get("name") or user.get("summary"),
                email=user.get("email"),
                escalation_level=item.get("escalation_level"),
                escalation_policy_id=policy.get("id"),
                escalation_policy_name=policy.get("summary"),
                schedule_id=schedule.get("id"),
                schedule_name=schedule.get("summary"),
                start=item.get("start"),
                end=item.get("end"),
            )
        )
    return oncalls


def get_incident(
    *, incident_id: Bind[str], retry: RetryPolicy | None = None, timeout: float | None = None
) -> Node:
    """Read one incident (``GET /incidents/{id}``)."""
    return provider_node(
        "pagerduty.get_incident",
        _get_incident,
        IncidentInput,
        Incident,
        {"incident_id": incident_id},
        retry=retry,
        timeout=timeout,
    )


def list_incidents(
    *,
    statuses: Bind[list[IncidentStatus]] | None = None,
    service_ids: Bind[list[str]] | None = None,
    dedup_key: Bind[str] | None = None,
    since: Bind[datetime] | None = None,
    until: Bind[datetime] | None = None,
    limit: Bind[int] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """List incidents (``GET /incidents``), following offset pages up to ``limit``."""
    return provider_node(
        "pagerduty.list_incidents",
        _list_incidents,
        ListIncidentsInput,
        list[Incident],
        {
            "statuses": statuses,
            "service_ids": service_ids,
            "dedup_key": dedup_key,
            "since": since,
            "until": until,
            "limit": limit,
        },
        retry=retry,
        timeout=timeout,
    )


def update_incident(
    *,
    incident_id: Bind[str],
    status: Bind[Literal["acknowledged", "resolved"]] | None = None,
    assignee_ids: Bind[list[str]] | None = None,
    escalation_level: Bind[int] | None = None,
    resolution: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Acknowledge, resolve, reassign or escalate (``PUT /incidents/{id}``, ``From`` header)."""
    return provider_node(
        "pagerduty.update_incident",
        _update_incident,
        UpdateIncidentInput,
        Incident,
        {
            "incident_id": incident_id,
            "status": status,
            "assignee_ids": assignee_ids,
            "escalation_level": escalation_level,
            "resolution": resolution,
        },
        retry=retry,
        timeout=timeout,
    )


def add_note(
    *,
    incident_id: Bind[str],
    content: Bind[str],
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Add a note to an incident (``POST /incidents/{id}/notes``); at-least-once."""
    return provider_node(
        "pagerduty.add_note",
        _add_note,
        AddNoteInput,
        Note,
        {"incident_id": incident_id, "content": content},
        retry=retry,
        timeout=timeout,
    )


def get_oncalls(
    *,
    escalation_policy_ids: Bind[list[str]] | None = None,
    schedule_ids: Bind[list[str]] | None = None,
    user_ids: Bind[list[str]] | None = None,
    since: Bind[datetime] | None = None,
    until: Bind[datetime] | None = None,
    earliest: Bind[bool] | None = None,
    limit: Bind[int] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Who is on call (``GET /oncalls?include[]=users``), with their email addresses."""
    return provider_node(
        "pagerduty.get_oncalls",
        _get_oncalls,
        OnCallsInput,
        list[OnCall],
        {
            "escalation_policy_ids": escalation_policy_ids,
            "schedule_ids": schedule_ids,
            "user_ids": user_ids,
            "since": since,
            "until": until,
            "earliest": earliest,
            "limit": limit,
        },
        retry=retry,
        timeout=timeout,
    )


# -- Webhooks v3 ---------------------------------------------------------------------------

_SEVERITY_BY_PRIORITY: dict[str, Severity] = {
    "P1": "critical",
    "P2": "error",
    "P3": "warning",
    "P4": "info",
    "P5": "info",
}


def _severity(priority: str | None, urgency: str | None) -> Severity:
    """P1..P5 when the account uses priorities, else the urgency."""
    if priority and priority.upper() in _SEVERITY_BY_PRIORITY:
        return _SEVERITY_BY_PRIORITY[priority.upper()]
    return "critical" if urgency == "high" else "warning"


def _describe(data: dict[str, Any], title: str) -> str:
    """v3 payloads carry no description; compose one from what they do carry."""
    body = data.get("body")
    explicit = data.get("description") or (body.get("details") if isinstance(body, dict) else None)
    if isinstance(explicit, str) and explicit.strip():
        return explicit
    facts = [
        ("Service", (data.get("service") or {}).get("summary")),
        ("Urgency", data.get("urgency")),
        ("Priority", (data.get("priority") or {}).get("summary")),
        ("Assigned to", ", ".join(r.summary or r.id for r in _refs(data.get("assignees")))),
        ("PagerDuty", data.get("html_url")),
    ]
    lines = [f"- {label}: {value}" for label, value in facts if value]
    return "\n".join([title, "", *lines]) if lines else title


def parse_incident_event(payload: Mapping[str, Any]) -> IncidentEvent:
    """Turn a PagerDuty v3 webhook body into an ``IncidentEvent``; ``PayloadError`` if not one."""
    event = payload.get("event") if isinstance(payload, Mapping) else None
    if not isinstance(event, dict):
        raise PayloadError("not a PagerDuty v3 webhook: the body has no 'event' object")
    event_type = event.get("event_type")
    data = event.get("data")
    if event.get("resource_type") != "incident" or not isinstance(data, dict):
        raise PayloadError(
            f"PagerDuty webhook {event.get('id')!r} is a {event_type!r} event, not an "
            "incident event"
        )
    # incident.annotated (and other sub-resource events) carry the incident as a reference.
    incident = data if data.get("type") == "incident" else data.get("incident")
    if not isinstance(incident, dict) or not incident.get("id"):
        raise PayloadError(f"PagerDuty webhook {event.get('id')!r} names no incident")
    try:
        title = incident.get("title") or incident.get("summary") or ""
        priority = (incident.get("priority") or {}).get("summary")
        agent = _ref(event.get("agent"))
        return IncidentEvent(
            event_id=event["id"],
            event_type=event_type,
            occurred_at=event["occurred_at"],
            incident_id=incident["id"],
            incident_number=incident.get("number"),
            title=title,
            description=_describe(incident, title),
            status=incident.get("status"),
            urgency=incident.get("urgency"),
            priority=priority,
            severity=_severity(priority, incident.get("urgency")),
            service_id=(incident.get("service") or {}).get("id"),
            service_name=(incident.get("service") or {}).get("summary"),
            escalation_policy_id=(incident.get("escalation_policy") or {}).get("id"),
            dedup_key=incident.get("incident_key"),
            assignees=_refs(incident.get("assignees")),
            teams=_refs(incident.get("teams")),
            agent=agent,
            acknowledged_by=agent if event_type == "incident.acknowledged" else None,
            resolved_by=agent if event_type == "incident.resolved" else None,
            html_url=incident.get("html_url"),
            note=data.get("content") if data.get("type") == "incident_note" else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"malformed PagerDuty incident webhook: {exc}") from None


async def _parse_webhook(payload: dict[str, Any]) -> IncidentEvent:
    return parse_incident_event(payload)


parse_webhook = Node(
    name="pagerduty.parse_webhook",
    fn=_parse_webhook,
    input_type=dict[str, Any],
    output_type=IncidentEvent,
    # A payload that does not parse now never will: one attempt.
    retry=RetryPolicy(max_attempts=1),
    binding=Output(INPUT_ALIAS),
)
"""Node: the trigger payload (alias ``input``) as an ``IncidentEvent``."""


def sign(raw_body: bytes, secret: str) -> str:
    """The ``X-PagerDuty-Signature`` value PagerDuty would send for ``raw_body``."""
    return pagerduty_v3(secret).signature(raw_body, secret)


def webhook_signature(secrets: Sequence[str | SecretStr] | None = None) -> HmacSignature:
    """The verifier for a PagerDuty v3 webhook route (``X-PagerDuty-Signature``, any of
    several secrets during rotation); ``secrets`` default to ``PAGERDUTY_WEBHOOK_SECRETS``
    (comma-separated)."""
    if secrets is None:
        secrets = [s.strip() for s in _Env().webhook_secrets.split(",") if s.strip()]
        if not secrets:
            raise ConfigurationError(
                "PagerDuty webhook verification needs a signing secret: set "
                "PAGERDUTY_WEBHOOK_SECRETS (comma-separated while rotating)"
            )
    return pagerduty_v3(secrets)
