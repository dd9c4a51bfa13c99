"""``incident-with-oncall``: when an incident triggers, direct-message whoever is on call
first for the escalation policy (``ESCALATION_POLICY``, else the incident's own).

PagerDuty already pages them; the Slack DM puts the incident in front of them where
they work, with the link.
"""

from __future__ import annotations

import os

from orchestrator import Flow, FlowState, NonRetryableError, Output, node
from providers import pagerduty, slack
from providers.pagerduty import OnCall

from .common import event, incident_link, is_event, pagerduty_incident_webhook

__all__ = ["flow"]

ESCALATION_POLICY = os.environ.get("ESCALATION_POLICY")


def policy_ids(s: FlowState) -> list[str]:
    policy = ESCALATION_POLICY or event(s).escalation_policy_id
    if not policy:
        raise NonRetryableError("set ESCALATION_POLICY: the incident names no escalation policy")
    return [policy]


@node("first-responder")
async def first_responder(oncalls: list[OnCall]) -> OnCall:
    """The lowest escalation level that has an email address."""
    reachable = [o for o in oncalls if o.email]
    if not reachable:
        raise NonRetryableError("nobody with an email address is on call for the policy")
    return min(reachable, key=lambda o: o.escalation_level or 99)


def dm_text(s: FlowState) -> str:
    e, who = event(s), s.get("on-call", OnCall)
    return (
        f":pager: {who.name or who.email}, you are on call (level {who.escalation_level}) "
        f"for {e.service_name}: {incident_link(e)} *{e.title}* ({e.severity}). "
        "Ticket and diagnostics follow in #incidents."
    )


flow = (
    Flow("incident-with-oncall")
    .triggered_by(pagerduty_incident_webhook())
    .then(pagerduty.parse_webhook.as_("event"))
    .when(is_event("incident.triggered"))
    .then(pagerduty.get_oncalls(escalation_policy_ids=policy_ids).as_("oncalls"))
    .then(first_responder.as_("on-call").with_input(Output("oncalls")))
    .then(slack.dm_user(email=Output("on-call.email"), text=dm_text).as_("oncall-dm"))
    .end_when()
)
