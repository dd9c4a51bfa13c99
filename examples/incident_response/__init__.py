"""Incident response with Resolute: five flows around one PagerDuty incident.

- ``incident_response``: ticket, Slack, diagnostics, auto-remediation, ack, resolve.
- ``oncall``: DM whoever is on call.
- ``metrics``: time to acknowledge/resolve from the event log, to Slack and Prometheus.
- ``escalation``: page management when nobody acknowledges in time.
- ``post_incident``: the post-mortem page from the audit trail, and its review meeting.

``service.worker`` runs them all (``resolute serve examples.incident_response.service:worker``);
``python -m examples.incident_response.demo`` (``make demo``) shows them working against
local fakes of the vendors and a sample service that really breaks and recovers.
"""
