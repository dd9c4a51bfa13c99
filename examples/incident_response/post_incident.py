"""``post-incident``: started by the ``incident-resolved`` signal. Drafts the post-mortem
page in Confluence from the incident's audit trail (what happened, who or what acted,
how long it took), books the review for the next business day at 10:00 UTC (there is no
calendar provider: the slot goes on the page, in Slack and on the ticket), and links the
page from the Jira ticket the triggered run created.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta
from html import escape

from pydantic import BaseModel

from orchestrator import (
    Flow,
    FlowState,
    Output,
    StepContext,
    Template,
    correlated_output,
    node,
    signal,
)
from orchestrator.postmortem import AuditTrail, IncidentMetrics, IncidentReport, TimelineEntry
from providers import confluence, jira, slack
from providers.confluence import ConfluencePage
from providers.jira import JiraIssue

from .common import RESOLVED_SIGNAL, ResolvedIncident, human_duration

__all__ = ["Postmortem", "flow", "render_page", "review_slot"]

CONFLUENCE_SPACE = os.environ.get("CONFLUENCE_SPACE", "OPS")
REVIEW_AT = time(10, 0, tzinfo=UTC)


class Postmortem(BaseModel):
    title: str
    body: str  # Confluence storage format
    review_at: datetime
    review: str  # the slot, for humans


def review_slot(resolved_at: datetime) -> datetime:
    """10:00 UTC on the first business day after the incident was resolved."""
    day = resolved_at.astimezone(UTC).date() + timedelta(days=1)
    while day.weekday() >= 5:  # Saturday, Sunday
        day += timedelta(days=1)
    return datetime.combine(day, REVIEW_AT)


PAGE = """\
<p><strong>Status:</strong> draft, written by Resolute from the audit trail.
Review meeting: <strong>{review}</strong>.</p>
<h2>Summary</h2>
<table><tbody>
<tr><th>Incident</th><td><a href="{incident_url}">{incident}</a>: {title}</td></tr>
<tr><th>Service</th><td>{service}</td></tr>
<tr><th>Jira</th><td><a href="{ticket_url}">{ticket}</a></td></tr>
<tr><th>Triggered</th><td>{triggered}</td></tr>
<tr><th>Acknowledged</th><td>{acknowledged} (time to acknowledge: {tta})</td></tr>
<tr><th>Resolved</th><td>{resolved} by {resolved_by} (time to resolve: {ttr})</td></tr>
<tr><th>Auto-remediated</th><td>{auto_remediated}</td></tr>
<tr><th>Escalated</th><td>{escalated}</td></tr>
<tr><th>Diagnostics run</th><td>{diagnostics}</td></tr>
<tr><th>Who or what acted</th><td>{actors}</td></tr>
</tbody></table>
<h2>Actions</h2>
<ul>{actions}</ul>
<h2>Timeline</h2>
<table><tbody>
<tr><th>time (UTC)</th><th>flow</th><th>event</th><th>actor</th></tr>
{timeline}
</tbody></table>
<h2>Follow-ups</h2>
<ul><li>Root cause:</li><li>What went well:</li><li>What to improve:</li></ul>
"""


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "n/a"


def _row(e: TimelineEntry) -> str:
    cells = (_when(e.at), e.flow, e.summary or e.type, e.actor)
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def _seconds(d: timedelta | None) -> float | None:
    return d.total_seconds() if d is not None else None


def render_page(
    incident: ResolvedIncident, ticket: JiraIssue, report: IncidentReport, review: str
) -> str:
    """The page body: ``PAGE`` filled from the audit trail (every value escaped)."""
    m = report.metrics or IncidentMetrics(incident=incident.incident_id)
    # What changed the world (steps that finished or failed), not the bookkeeping.
    actions = [e for e in report.timeline if e.type in ("step.completed", "step.failed")]
    values = {
        "review": review,
        "incident_url": incident.html_url or "",
        "incident": f"PD #{incident.incident_number or incident.incident_id}",
        "title": incident.title,
        "service": incident.service or "unknown",
        "ticket_url": ticket.url,
        "ticket": ticket.key,
        "triggered": _when(m.triggered_at),
        "acknowledged": _when(m.acknowledged_at),
        "tta": human_duration(_seconds(m.time_to_acknowledge)),
        "resolved": _when(m.resolved_at),
        "resolved_by": incident.resolved_by or "unknown",
        "ttr": human_duration(_seconds(m.time_to_resolve)),
        "auto_remediated": "yes" if m.auto_remediated else "no",
        "escalated": "yes" if m.escalated else "no",
        "diagnostics": str(m.diagnostics_run),
        "actors": ", ".join(sorted({e.actor for e in report.timeline})) or "nobody",
    }
    filled = {k: escape(v) for k, v in values.items()}
    filled["actions"] = (
        "".join(
            f"<li>{escape(_when(e.at))} [{escape(e.flow)}] {escape(e.summary or e.type)}</li>"
            for e in actions
        )
        or "<li>none recorded</li>"
    )
    filled["timeline"] = "\n".join(_row(e) for e in report.timeline)
    return PAGE.format(**filled)


@node("draft-postmortem")
async def draft_postmortem(ctx: StepContext, incident: ResolvedIncident) -> Postmortem:
    report = await ctx.provider(AuditTrail).report(incident.incident_id)
    ticket = ctx.state.get("ticket", JiraIssue)
    slot = review_slot(incident.resolved_at)
    review = slot.strftime("%A %Y-%m-%d %H:%M UTC")
    number = incident.incident_number or incident.incident_id
    return Postmortem(
        title=f"Post-mortem: PD #{number} {incident.title} ({incident.incident_id})"[:255],
        body=render_page(incident, ticket, report, review),
        review_at=slot,
        review=review,
    )


def announcement(s: FlowState) -> str:
    incident = s.get("input", ResolvedIncident)
    page, draft = s.get("postmortem-page", ConfluencePage), s.get("draft", Postmortem)
    link = f"<{incident.html_url}|PD #{incident.incident_number}>" if incident.html_url else ""
    return (
        f":memo: Post-mortem draft for {link or incident.incident_id} {incident.title}: "
        f"<{page.url}|{page.title}>. Review meeting {draft.review}; bring your notes."
    )


flow = (
    Flow("post-incident")
    .triggered_by(signal(RESOLVED_SIGNAL))
    .then(correlated_output("ticket", flow="incident-response", model=JiraIssue).as_("ticket"))
    .then(draft_postmortem.as_("draft").with_input(Output("input")))
    .then(
        confluence.create_page(
            space_key=CONFLUENCE_SPACE,
            title=Output("draft.title"),
            body=Output("draft.body"),
            labels=["post-mortem", "incident"],
        ).as_("postmortem-page")
    )
    .parallel()
    .then(
        jira.add_comment(
            issue_key=Output("ticket.key"),
            body=Template(
                "Post-mortem draft: {postmortem-page.url}\nReview meeting: {draft.review}"
            ),
        ).as_("ticket-postmortem")
    )
    .then(slack.post_message(text=announcement).as_("slack-postmortem"))
    .end_parallel()
)
