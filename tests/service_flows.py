"""Flows behind the service tests, importable by ``resolute serve|api tests.service_flows:worker``.

Two flows share the PagerDuty route: ``pd-incident`` (a triggered incident waits for
its acknowledgement, delivered to the active run by incident id) and ``pd-audit``
(every delivery). ``open-hook`` is an unverified route; ``flaky`` fails until fixed.
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator import (
    Flow,
    NonRetryableError,
    Worker,
    WorkerConfig,
    manual,
    node,
    signal,
    wait_for_signal,
    webhook,
)
from orchestrator.verify import no_verification, pagerduty_v3

SECRET = "resolute-test-signing-secret"
OLD_SECRET = "resolute-test-old-secret"
PD_ROUTE = "/hooks/pagerduty"
OPEN_ROUTE = "/hooks/open"


def incident_id(payload: dict[str, Any]) -> str | None:
    data = (payload.get("event") or {}).get("data") or {}
    incident = data.get("incident")  # notes and responders point at their incident
    return str((incident if isinstance(incident, dict) else data).get("id") or "") or None


@node("triage")
async def triage(payload: dict[str, Any]) -> dict[str, Any]:
    return {"incident": incident_id(payload)}


@node("note")
async def note(payload: dict[str, Any]) -> str:
    return str((payload.get("event") or {}).get("event_type", "?"))


@node("echo")
async def echo(payload: Any) -> Any:
    return payload


FIXED = {"flaky": False}


@node("flaky")
async def flaky(payload: Any) -> str:
    if not FIXED["flaky"]:
        raise NonRetryableError("the vendor said 400")
    return "ok"


_PD = pagerduty_v3([SECRET, OLD_SECRET])

FLOWS = [
    Flow("pd-incident")
    .triggered_by(webhook(PD_ROUTE, verify=_PD, correlate=incident_id, deliver_to_active=True))
    .then(triage.as_("triage"))
    .then(wait_for_signal("incident.acknowledged", timeout=30).as_("ack")),
    Flow("pd-audit").triggered_by(webhook(PD_ROUTE, verify=_PD)).then(note.as_("note")),
    Flow("open-hook")
    .triggered_by(webhook(OPEN_ROUTE, verify=no_verification()))
    .then(echo.as_("echo")),
    Flow("manual-echo").triggered_by(manual()).then(echo.as_("echo")),
    Flow("on-resolved").triggered_by(signal("incident.resolved")).then(echo.as_("echo")),
    Flow("flaky").then(flaky.as_("flaky")),
]


def worker() -> Worker:
    """Configured from the environment, like ``tests.flows:worker``."""
    cfg = WorkerConfig(
        task_queue="service",
        worker_id=os.environ.get("RESOLUTE_WORKER_ID"),
        poll_seconds=0.1,
        hold_seconds=0.1,
        shutdown_grace_seconds=2,
        auto_migrate=False,
    )
    return Worker(cfg).with_flow(*FLOWS)


def unverified_worker() -> Worker:
    """A webhook route without ``verify=``: the service must refuse to start."""
    flow = Flow("careless").triggered_by(webhook("/hooks/careless")).then(echo.as_("echo"))
    return Worker(WorkerConfig(task_queue="service", auto_migrate=False)).with_flow(flow)
