"""What the incident flows share: the PagerDuty webhook route they all listen on, the
event-type predicates they start with, and the signal one flow sends another.

Every flow on ``/pagerduty/incident`` gets each delivery; the route's verification,
de-duplication and correlation functions must be the same objects for all of them (one
delivery has one id and one incident), so they live here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from orchestrator import FlowState, webhook
from orchestrator.triggers import WebhookTrigger
from orchestrator.verify import HmacSignature
from providers import pagerduty
from providers.pagerduty import IncidentEvent

__all__ = [
    "PAGERDUTY_ROUTE",
    "RESOLVED_SIGNAL",
    "ResolvedIncident",
    "env_seconds",
    "event",
    "event_id",
    "human_duration",
    "incident_id",
    "incident_link",
    "is_event",
    "pagerduty_incident_webhook",
]

PAGERDUTY_ROUTE = "/pagerduty/incident"
RESOLVED_SIGNAL = "incident-resolved"


def incident_id(payload: dict[str, Any]) -> str | None:
    """The correlation key of a v3 delivery: the incident's id (notes and responders
    carry their incident as a reference). ``None`` for anything else."""
    event_ = payload.get("event")
    data = event_.get("data") if isinstance(event_, dict) else None
    if not isinstance(data, dict):
        return None
    incident = data if data.get("type") == "incident" else data.get("incident")
    found = incident.get("id") if isinstance(incident, dict) else None
    return found if isinstance(found, str) and found else None


def event_id(payload: dict[str, Any], headers: Mapping[str, str]) -> str | None:
    """The delivery's identity: PagerDuty's event id, the same in every retry and in a
    replay under a new ``X-Webhook-Id``, so an event never starts its runs twice."""
    event_ = payload.get("event")
    found = event_.get("id") if isinstance(event_, dict) else None
    return found if isinstance(found, str) and found else None


@functools.cache
def _verifier() -> HmacSignature:
    # One instance for every flow on the route: the route checks each distinct verifier.
    return pagerduty.webhook_signature()


def pagerduty_incident_webhook(*, deliver_to_active: bool = False) -> WebhookTrigger:
    """The PagerDuty v3 route, signed with ``PAGERDUTY_WEBHOOK_SECRETS``, de-duplicated by
    event id and correlated by incident id."""
    return webhook(
        PAGERDUTY_ROUTE,
        verify=_verifier(),
        dedup=event_id,
        correlate=incident_id,
        deliver_to_active=deliver_to_active,
    )


def event(state: FlowState) -> IncidentEvent:
    """The parsed delivery (every flow here aliases ``pagerduty.parse_webhook`` "event")."""
    return state.get("event", IncidentEvent)


def is_event(event_type: str) -> Callable[[FlowState], bool]:
    """A ``when`` predicate: the delivery is ``event_type``."""

    def predicate(state: FlowState) -> bool:
        return event(state).event_type == event_type

    predicate.__qualname__ = f"event is {event_type}"  # the label the audit trail shows
    return predicate


def incident_link(e: IncidentEvent) -> str:
    """``PD #12`` linked to the incident, in Slack's mrkdwn."""
    name = f"PD #{e.incident_number}" if e.incident_number else e.incident_id
    return f"<{e.html_url}|{name}>" if e.html_url else name


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def env_seconds(name: str, default: timedelta) -> float:
    """A duration setting in seconds, e.g. ``ESCALATION_AFTER_SECONDS=5`` for a demo."""
    raw = os.environ.get(name)
    seconds = float(raw) if raw else default.total_seconds()
    if seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return seconds


class ResolvedIncident(BaseModel):
    """The ``incident-resolved`` signal: what the post-incident work starts from."""

    incident_id: str
    incident_number: int | None = None
    title: str
    service: str | None = None
    html_url: str | None = None
    resolved_at: datetime
    resolved_by: str | None = None
