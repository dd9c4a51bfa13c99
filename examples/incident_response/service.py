"""The incident-response service: the five flows on one worker, providers from the
environment. Run it with::

    resolute serve examples.incident_response.service:worker

It needs the vendors' settings (``PAGERDUTY_*``, ``JIRA_*``, ``SLACK_*``,
``CONFLUENCE_*``; ``resolute sandbox`` prints a set pointing at local fakes), the
webhook signing secret (``PAGERDUTY_WEBHOOK_SECRETS``), ``ESCALATION_ROUTING_KEY``, and
optionally ``ESCALATION_POLICY``, ``ESCALATION_AFTER_SECONDS``,
``ESCALATION_SLACK_CHANNEL``, ``JIRA_PROJECT``, ``CONFLUENCE_SPACE`` and
``CHECKOUT_API_URL`` (the service the diagnostics runbook checks).
"""

from __future__ import annotations

from orchestrator import Worker, WorkerConfig
from orchestrator.postmortem import AuditTrail
from providers.confluence import ConfluenceProvider
from providers.jira import JiraProvider
from providers.pagerduty import PagerDutyProvider
from providers.slack import SlackProvider

from . import escalation, incident_response, metrics, oncall, post_incident

__all__ = ["worker"]

worker = (
    Worker(WorkerConfig(task_queue="incidents", poll_seconds=0.5))
    .with_flow(
        incident_response.flow,
        oncall.flow,
        metrics.flow,
        escalation.flow,
        post_incident.flow,
    )
    .with_providers(
        PagerDutyProvider.from_env(),
        JiraProvider.from_env(),
        SlackProvider.from_env(),
        ConfluenceProvider.from_env(),
        AuditTrail(),
    )
)
