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

from pydantic import SecretStr

from orchestrator import (
    ConfigurationError,
    Flow,
    FlowState,
    Output,
    StepContext,
    node,
    wait_for_signal,
)
from providers import pagerduty, slack
from providers.pagerduty import EventResult, Incident, IncidentEvent, PagerDutyProvider

from .common import (
    env_seconds,
    event,
    human_duration,
    incident_link,
    is_event,
    pagerduty_incident_webhook,
)

__all__ = ["EscalationPagerDuty", "flow"]

ESCALATE_AFTER = env_seconds("ESCALATION_AFTER_SECONDS", timedelta(minutes=15))
MANAGEMENT_CHANNEL = os.environ.get("ESCALATION_SLACK_CHANNEL", "#ops")


class EscalationPagerDuty:
    """The Events API integration of the service that pages management.

    A provider of its own because ``pagerduty.trigger_event`` sends with the main
    provider's routing key, and escalations go to another service.
    """

    name = "pagerduty-escalation"

    def __init__(self, routing_key: str | SecretStr, events_url: str) -> None:
        self.pagerduty = PagerDutyProvider(routing_key=routing_key, events_url=events_url)

    @classmethod
    def from_env(cls) -> EscalationPagerDuty:
        """``ESCALATION_ROUTING_KEY`` on ``PAGERDUTY_EVENTS_URL``."""
        key = os.environ.get("ESCALATION_ROUTING_KEY")
        if not key:
            raise ConfigurationError(
                "incident-with-escalation needs ESCALATION_ROUTING_KEY: the Events API "
                "integration key of the PagerDuty service that pages management"
            )
        url = os.environ.get("PAGERDUTY_EVENTS_URL", pagerduty.EVENTS_URL)
        return cls(routing_key=key, events_url=url)

    async def close(self) -> None:
        await self.pagerduty.close()


def not_acknowledged(s: FlowState) -> bool:
    return not s.get("acknowledged")["received"]


def still_unacknowledged(s: FlowState) -> bool:
    return s.get("current", Incident).status == "triggered"


@node("page-management")
async def page_management(ctx: StepContext, e: IncidentEvent) -> EventResult:
    """Trigger the escalation alert; its dedup key names the incident, so a re-run (or a
    second run for the same incident) never pages twice."""
    pd = ctx.provider(EscalationPagerDuty).pagerduty
    body = {
        "routing_key": pd.require("routing_key"),
        "event_action": "trigger",
        "dedup_key": f"escalation-{e.incident_id}",
        "client": "Resolute",
        "payload": {
            "summary": f"ESCALATION: PD #{e.incident_number} {e.title} unacknowledged for "
            f"{human_duration(ESCALATE_AFTER)}",
            "source": "resolute",
            "severity": "critical",
            "component": e.service_name,
            "custom_details": {"incident_id": e.incident_id, "incident_url": e.html_url},
        },
        "links": [{"href": e.html_url, "text": "the unacknowledged incident"}]
        if e.html_url
        else [],
    }
    answer = await pd.events.request(
        "POST", "", operation="trigger escalation", json_body=body, replay_safe=True
    )
    return EventResult.model_validate(answer)


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
