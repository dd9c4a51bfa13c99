"""``incident-with-escalation``: if nobody acknowledges a triggered incident within
``ESCALATION_AFTER_SECONDS`` (15 minutes by default), page management through their own
PagerDuty service (``ESCALATION_ROUTING_KEY``) and tell ``ESCALATION_SLACK_CHANNEL``.

The wait is durable: the run leaves memory and wakes at its deadline, across restarts.
Its trigger says ``deliver_to_active=True``, so PagerDuty's ``incident.acknowledged``
for the same incident reaches the waiting run as a signal of that name instead of
starting a new run. At the deadline the incident's live status is read back, so an
acknowledgement that came another way (or an incident already resolved) never pages
anyone. PagerDuty sends an incident's events in order, so ``incident.triggered`` finds no
other run of this flow active and starts the waiting one.
"""

from __future__ import annotations

import os
from datetime import timedelta

from orchestrator import (
    ConfigurationError,
    Flow,
    FlowState,
    Output,
    Template,
    wait_for_signal,
)
from providers import pagerduty, slack
from providers.pagerduty import Incident

from .common import (
    env_seconds,
    event,
    human_duration,
    incident_link,
    is_event,
    pagerduty_incident_webhook,
)

__all__ = ["flow"]

ESCALATE_AFTER = env_seconds("ESCALATION_AFTER_SECONDS", timedelta(minutes=15))
MANAGEMENT_CHANNEL = os.environ.get("ESCALATION_SLACK_CHANNEL", "#ops")


def escalation_routing_key(_: FlowState) -> str:
    """``ESCALATION_ROUTING_KEY``: the Events API key of the service that pages management
    (read when the step starts, so a missing key fails that step with this message)."""
    key = os.environ.get("ESCALATION_ROUTING_KEY")
    if not key:
        raise ConfigurationError(
            "incident-with-escalation needs ESCALATION_ROUTING_KEY: the Events API "
            "integration key of the PagerDuty service that pages management"
        )
    return key


def not_acknowledged(s: FlowState) -> bool:
    return not s.get("acknowledged")["received"]


def still_unacknowledged(s: FlowState) -> bool:
    return s.get("current", Incident).status == "triggered"


def escalation_summary(s: FlowState) -> str:
    e = event(s)
    return (
        f"ESCALATION: PD #{e.incident_number} {e.title} unacknowledged for "
        f"{human_duration(ESCALATE_AFTER)}"
    )


def escalation_links(s: FlowState) -> list[dict[str, str]]:
    e = event(s)
    return [{"href": e.html_url, "text": "the unacknowledged incident"}] if e.html_url else []


# Its dedup key names the incident, so a re-run (or a second run for the same incident)
# never pages twice.
page_management = pagerduty.trigger_event(
    summary=escalation_summary,
    source="resolute",
    severity="critical",
    dedup_key=Template("escalation-{event.incident_id}"),
    component=Output("event.service_name"),
    custom_details={
        "incident_id": Output("event.incident_id"),
        "incident_url": Output("event.html_url"),
    },
    links=escalation_links,
    routing_key=escalation_routing_key,
)


def management_text(s: FlowState) -> str:
    e = event(s)
    return (
        f":warning: {incident_link(e)} *{e.title}* ({e.service_name}) has not been "
        f"acknowledged after {human_duration(ESCALATE_AFTER)}: paged management in PagerDuty."
    )


flow = (
    Flow("incident-with-escalation")
    .triggered_by(pagerduty_incident_webhook(deliver_to_active=True))
    .then(pagerduty.parse_webhook.as_("event"))
    .when(is_event("incident.triggered"))
    .then(wait_for_signal("incident.acknowledged", timeout=ESCALATE_AFTER).as_("acknowledged"))
    .when(not_acknowledged)
    .then(pagerduty.get_incident(incident_id=Output("event.incident_id")).as_("current"))
    .when(still_unacknowledged)
    .then(page_management.as_("escalation"))
    .then(
        slack.post_message(channel=MANAGEMENT_CHANNEL, text=management_text).as_(
            "management-notified"
        )
    )
    .end_when()
    .end_when()
    .end_when()
)
