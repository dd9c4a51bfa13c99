"""``incident-response``: one PagerDuty incident, end to end.

- ``incident.triggered``: open the Jira ticket, tell the incident channel and run the
  service's diagnostics, all at once; write the findings on the ticket and on the
  PagerDuty incident (with the ticket link); when a fix is known and confidence is
  above 0.9, apply it, and if the service recovers resolve the ticket
  ("Auto-remediated"), resolve the PagerDuty alert and say so in Slack.
- ``incident.acknowledged``: assign the ticket to the responder, say so in Slack.
- ``incident.resolved``: resolve the ticket, say so, and send ``incident-resolved``
  (the post-incident flow starts from it).

The later events find the ticket the triggered run created through the incident's
correlation key (``correlated_output``), even when they arrive first: that step retries
until the ticket exists.
"""

from __future__ import annotations

import os

from orchestrator import (
    Flow,
    FlowState,
    Output,
    StepContext,
    correlated_output,
    node,
)
from providers import jira, pagerduty, slack
from providers.jira import JiraIssue
from providers.pagerduty import IncidentEvent, OnCall

from .common import (
    RESOLVED_SIGNAL,
    ResolvedIncident,
    event,
    incident_link,
    is_event,
    pagerduty_incident_webhook,
)
from .diagnostics import Diagnostics, Remediation, remediate, run_diagnostics

__all__ = ["FLOW", "flow"]

FLOW = "incident-response"
JIRA_PROJECT = os.environ.get("JIRA_PROJECT", "OPS")
AUTO_REMEDIATE_ABOVE = 0.9
PRIORITY = {"critical": "Highest", "error": "High", "warning": "Medium", "info": "Low"}
DONE = ["Resolved", "Done"]  # the ticket is already closed: transitions skip


# --- the ticket ------------------------------------------------------------------------


def ticket_summary(s: FlowState) -> str:
    e = event(s)
    return f"[PD #{e.incident_number or e.incident_id}] {e.title}"[:255]


def ticket_description(s: FlowState) -> str:
    e = event(s)
    return f"{e.description}\n\nPagerDuty incident: {e.html_url or e.incident_id}"


def ticket_priority(s: FlowState) -> str:
    return PRIORITY[event(s).severity]


def ticket_labels(s: FlowState) -> list[str]:
    e = event(s)
    return ["incident", "pagerduty", f"pd-{e.incident_id}", f"service-{e.service_name}"]


def diagnostics_comment(s: FlowState) -> str:
    d = s.get("diagnostics", Diagnostics)
    plan = (
        f"Proposed fix: {d.remediation} (confidence {d.confidence:.0%})"
        if d.remediation_available
        else f"No automatic fix (confidence {d.confidence:.0%})"
    )
    return f"**Diagnostics** ({d.runbook} runbook)\n\n{d.summary}\n\n{plan}"


def pagerduty_note(s: FlowState) -> str:
    d = s.get("diagnostics", Diagnostics)
    ticket = s.get("ticket", JiraIssue)
    return f"Resolute diagnostics ({d.runbook} runbook):\n{d.summary}\n\nJira: {ticket.url}"


# --- decisions -------------------------------------------------------------------------


def can_auto_remediate(s: FlowState) -> bool:
    d = s.get("diagnostics", Diagnostics)
    return d.remediation_available and d.confidence > AUTO_REMEDIATE_ABOVE


def remediation_succeeded(s: FlowState) -> bool:
    return s.get("remediation", Remediation).success


def responder_ids(s: FlowState) -> list[str]:
    agent = event(s).agent
    return [agent.id] if agent else []


def responder_email(s: FlowState) -> str:
    """The acknowledger's email ("" if unknown): v3 webhooks name a user, and PagerDuty's
    on-call list has the address of whoever is on call."""
    agent = event(s).agent
    oncalls: list[OnCall] = s.get("responder", list[OnCall])
    found = (o.email for o in oncalls if agent and o.user_id == agent.id and o.email)
    return next(found, "")


def responder_known(s: FlowState) -> bool:
    return bool(responder_email(s))


# --- Slack -----------------------------------------------------------------------------


def triggered_text(s: FlowState) -> str:
    e = event(s)
    return (
        f":rotating_light: {incident_link(e)} triggered: *{e.title}* "
        f"({e.service_name}, {e.severity}). Opening a ticket and running diagnostics."
    )


def remediated_text(s: FlowState) -> str:
    e, r = event(s), s.get("remediation", Remediation)
    ticket = s.get("ticket", JiraIssue)
    return (
        f":white_check_mark: {incident_link(e)} auto-remediated: {r.action} ({r.detail}). "
        f"PagerDuty resolved, <{ticket.url}|{ticket.key}> resolved as Auto-remediated."
    )


def remediation_failed_text(s: FlowState) -> str:
    e, r = event(s), s.get("remediation", Remediation)
    return f":warning: {incident_link(e)}: {r.action} did not bring the service back: {r.detail}"


def acknowledged_text(s: FlowState) -> str:
    e = event(s)
    ticket = s.get("acked-ticket", JiraIssue)
    who = e.acknowledged_by.summary if e.acknowledged_by and e.acknowledged_by.summary else "?"
    owner = (
        f"assigned to {s.get('assignment', jira.Assignment).display_name}"
        if s.has("assignment")
        else "left unassigned (no Jira account found for them)"
    )
    return f":eyes: {incident_link(e)} acknowledged by {who}; <{ticket.url}|{ticket.key}> {owner}."


def resolved_text(s: FlowState) -> str:
    e = event(s)
    ticket = s.get("resolved-ticket", JiraIssue)
    who = e.resolved_by.summary if e.resolved_by and e.resolved_by.summary else "PagerDuty"
    return (
        f":checkered_flag: {incident_link(e)} resolved by {who}; "
        f"<{ticket.url}|{ticket.key}> closed. Post-mortem draft on its way."
    )


@node("announce-resolution")
async def announce_resolution(ctx: StepContext, e: IncidentEvent) -> ResolvedIncident:
    """Send ``incident-resolved`` for this incident (once, even if this step re-runs)."""
    resolved = ResolvedIncident(
        incident_id=e.incident_id,
        incident_number=e.incident_number,
        title=e.title,
        service=e.service_name,
        html_url=e.html_url,
        resolved_at=e.occurred_at,
        resolved_by=e.resolved_by.summary if e.resolved_by else None,
    )
    payload = resolved.model_dump(mode="json")
    await ctx.emit_signal(RESOLVED_SIGNAL, payload, correlation_key=e.incident_id)
    return resolved


flow = (
    Flow(FLOW)
    .triggered_by(pagerduty_incident_webhook())
    .then(pagerduty.parse_webhook.as_("event"))
    .when(is_event("incident.triggered"))
    # ticket, alert and diagnostics at once
    .parallel()
    .then(
        jira.create_issue(
            project=JIRA_PROJECT,
            issue_type="Incident",
            summary=ticket_summary,
            description=ticket_description,
            priority=ticket_priority,
            labels=ticket_labels,
        ).as_("ticket")
    )
    .then(slack.post_message(text=triggered_text).as_("slack-triggered"))
    .then(run_diagnostics.as_("diagnostics"))
    .end_parallel()
    # the findings, on the ticket and on the incident
    .parallel()
    .then(
        jira.add_comment(issue_key=Output("ticket.key"), body=diagnostics_comment).as_(
            "ticket-diagnostics"
        )
    )
    .then(
        pagerduty.add_note(incident_id=Output("event.incident_id"), content=pagerduty_note).as_(
            "pagerduty-note"
        )
    )
    .end_parallel()
    .when(can_auto_remediate)
    .then(remediate.as_("remediation"))
    .when(remediation_succeeded)
    # ticket first: when PagerDuty's incident.resolved comes back, it finds it closed
    .then(
        jira.transition_issue(
            issue_key=Output("ticket.key"),
            transition="Resolve",
            resolution="Auto-remediated",
            skip_if_status=DONE,
        ).as_("ticket-remediated")
    )
    # the incident's incident_key is the alert's dedup key
    .then(pagerduty.resolve_event(dedup_key=Output("event.dedup_key")).as_("resolve-event"))
    .then(slack.post_message(text=remediated_text).as_("slack-remediated"))
    .otherwise()
    .then(slack.post_message(text=remediation_failed_text).as_("slack-remediation-failed"))
    .end_when()  # remediation_succeeded
    .end_when()  # can_auto_remediate
    .else_when(is_event("incident.acknowledged"))
    .then(correlated_output("ticket", flow=FLOW, model=JiraIssue).as_("acked-ticket"))
    .then(pagerduty.get_oncalls(user_ids=responder_ids).as_("responder"))
    .when(responder_known)
    .then(
        jira.assign_issue(issue_key=Output("acked-ticket.key"), email=responder_email).as_(
            "assignment"
        )
    )
    .end_when()  # responder_known
    .then(slack.post_message(text=acknowledged_text).as_("slack-acknowledged"))
    .else_when(is_event("incident.resolved"))
    .then(correlated_output("ticket", flow=FLOW, model=JiraIssue).as_("resolved-ticket"))
    .then(
        jira.transition_issue(
            issue_key=Output("resolved-ticket.key"),
            transition="Resolve",
            resolution="Done",
            skip_if_status=DONE,
        ).as_("ticket-closed")
    )
    .then(slack.post_message(text=resolved_text).as_("slack-resolved"))
    .then(announce_resolution.as_("incident-resolved"))
    .end_when()
)
