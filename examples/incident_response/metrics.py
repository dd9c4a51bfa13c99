"""``incident-with-metrics``: when an incident is resolved, compute its numbers from the
event log (the ``incident_metrics`` view, through ``AuditTrail``) and publish them: a
Slack summary, and Prometheus gauges on the service's ``/metrics``.

The gauges hold the last resolved incident per service and live in the process that ran
the step (``resolute serve`` exposes its own registry); the log stays the record.
"""

from __future__ import annotations

from prometheus_client import Gauge
from pydantic import BaseModel

from orchestrator import Flow, FlowState, RetryPolicy, StepContext, node
from orchestrator.postmortem import AuditTrail
from providers import pagerduty, slack
from providers.pagerduty import IncidentEvent

from .common import event, human_duration, incident_link, is_event, pagerduty_incident_webhook

__all__ = ["IncidentNumbers", "flow"]

_LABELS = ["service"]
TIME_TO_ACKNOWLEDGE = Gauge(
    "resolute_incident_time_to_acknowledge_seconds",
    "Time to acknowledge of the last resolved incident (-1: never acknowledged).",
    _LABELS,
)
TIME_TO_RESOLVE = Gauge(
    "resolute_incident_time_to_resolve_seconds",
    "Time to resolve of the last resolved incident.",
    _LABELS,
)
AUTO_REMEDIATED = Gauge(
    "resolute_incident_auto_remediated",
    "1 when the last resolved incident was fixed by automatic remediation.",
    _LABELS,
)
DIAGNOSTICS_RUN = Gauge(
    "resolute_incident_diagnostics_runs",
    "Diagnostics runs of the last resolved incident.",
    _LABELS,
)


class IncidentNumbers(BaseModel):
    incident_id: str
    service: str
    time_to_acknowledge_seconds: float | None
    time_to_resolve_seconds: float | None
    auto_remediated: bool
    escalated: bool
    diagnostics_run: int


class MetricsNotReadyError(Exception):
    """The view does not show the incident yet (retried)."""


@node("measure-incident", retry=RetryPolicy(max_attempts=5, initial_interval=1.0))
async def measure(ctx: StepContext, e: IncidentEvent) -> IncidentNumbers:
    report = await ctx.provider(AuditTrail).report(e.incident_id)
    m = report.metrics
    if m is None:
        raise MetricsNotReadyError(f"incident_metrics has no row for {e.incident_id} yet")
    tta, ttr = m.time_to_acknowledge, m.time_to_resolve
    return IncidentNumbers(
        incident_id=e.incident_id,
        service=e.service_name or "unknown",
        time_to_acknowledge_seconds=tta.total_seconds() if tta is not None else None,
        time_to_resolve_seconds=ttr.total_seconds() if ttr is not None else None,
        auto_remediated=m.auto_remediated,
        escalated=m.escalated,
        diagnostics_run=m.diagnostics_run,
    )


@node("publish-gauges")
async def publish_gauges(n: IncidentNumbers) -> dict[str, float]:
    values = {
        "time_to_acknowledge_seconds": n.time_to_acknowledge_seconds
        if n.time_to_acknowledge_seconds is not None
        else -1.0,
        "time_to_resolve_seconds": n.time_to_resolve_seconds or 0.0,
        "auto_remediated": float(n.auto_remediated),
        "diagnostics_runs": float(n.diagnostics_run),
    }
    TIME_TO_ACKNOWLEDGE.labels(n.service).set(values["time_to_acknowledge_seconds"])
    TIME_TO_RESOLVE.labels(n.service).set(values["time_to_resolve_seconds"])
    AUTO_REMEDIATED.labels(n.service).set(values["auto_remediated"])
    DIAGNOSTICS_RUN.labels(n.service).set(values["diagnostics_runs"])
    return values


def summary_text(s: FlowState) -> str:
    e, n = event(s), s.get("metrics", IncidentNumbers)
    return (
        f":bar_chart: {incident_link(e)} in numbers: time to acknowledge "
        f"{human_duration(n.time_to_acknowledge_seconds)}, time to resolve "
        f"{human_duration(n.time_to_resolve_seconds)}, auto-remediated "
        f"{'yes' if n.auto_remediated else 'no'}, escalated {'yes' if n.escalated else 'no'}, "
        f"diagnostics run {n.diagnostics_run}."
    )


flow = (
    Flow("incident-with-metrics")
    .triggered_by(pagerduty_incident_webhook())
    .then(pagerduty.parse_webhook.as_("event"))
    .when(is_event("incident.resolved"))
    .then(measure.as_("metrics"))
    .parallel()
    .then(publish_gauges.as_("gauges"))
    .then(slack.post_message(text=summary_text).as_("slack-metrics"))
    .end_parallel()
    .end_when()
)
