"""Diagnostics and remediation for the incident-response flow.

Each service with a runbook gets its own checks and its own judgement of whether an
automatic fix is safe; services without one get the generic fallback, which never
claims a fix. The verdict is a typed ``Diagnostics`` the flow branches on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp
from pydantic import BaseModel, Field

from orchestrator import NonRetryableError, RetryPolicy, node
from providers.pagerduty import IncidentEvent
from providers.runbook import Check, check_http, summarise

__all__ = ["RUNBOOKS", "Diagnostics", "Remediation", "remediate", "run_diagnostics"]

# Where the checkout-api runbook finds the service (the demo points it at its sample).
CHECKOUT_API_URL = os.environ.get("CHECKOUT_API_URL", "http://127.0.0.1:8720").rstrip("/")

# How long a remediated service gets to come back: checks, seconds apart.
RECOVERY_CHECKS, RECOVERY_INTERVAL = 10, 0.5

# Faults a restart of checkout-api is known to clear, and how sure past incidents make us.
RESTART_FIXES = {"connection-pool-exhausted": 0.95, "thread-pool-deadlock": 0.92}


class Diagnostics(BaseModel):
    service: str
    runbook: str
    healthy: bool
    remediation_available: bool
    confidence: float = Field(ge=0, le=1)
    remediation: str | None = None  # what the fix does, for humans
    remediation_url: str | None = None  # what the remediation step POSTs
    health_url: str | None = None  # how the remediation step sees it worked
    summary: str
    checks: list[Check]


class Remediation(BaseModel):
    action: str
    success: bool  # the service is healthy again (incident_metrics reads this)
    detail: str


async def _fault_signature(url: str) -> tuple[Check, str | None]:
    """What the degraded health answer says is wrong."""
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as resp,
        ):
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        took = round((time.monotonic() - started) * 1000)
        check = Check(name="fault signature", status="warn", output=str(exc), duration_ms=took)
        return check, None
    took = round((time.monotonic() - started) * 1000)
    fault = body.get("fault") if isinstance(body, dict) else None
    if not fault:
        return Check(name="fault signature", status="ok", output="none", duration_ms=took), None
    output = f"{fault}: {body.get('detail', '')}".strip(": ")
    return Check(name="fault signature", status="fail", output=output, duration_ms=took), fault


async def checkout_api(event: IncidentEvent) -> Diagnostics:
    health = f"{CHECKOUT_API_URL}/health"
    probe = await check_http(health, name="checkout-api /health", warn_after_ms=1000)
    signature, fault = await _fault_signature(health)
    healthy = probe.status == "ok"
    fixable = not healthy and fault in RESTART_FIXES
    if healthy:
        confidence, assessment = 0.9, "healthy now; nothing to remediate."
    elif fixable:
        confidence = RESTART_FIXES[str(fault)]
        assessment = f"{fault} is cleared by a restart (confidence {confidence:.0%})."
    else:
        confidence = 0.3
        assessment = f"{fault or 'an unknown fault'}: a restart is not known to help."
    checks = [probe, signature]
    return Diagnostics(
        service="checkout-api",
        runbook="checkout-api",
        healthy=healthy,
        remediation_available=fixable,
        confidence=confidence,
        remediation="restart checkout-api" if fixable else None,
        remediation_url=f"{CHECKOUT_API_URL}/admin/restart" if fixable else None,
        health_url=health,
        summary=f"{summarise(checks).summary}\nAssessment: {assessment}",
        checks=checks,
    )


async def generic(event: IncidentEvent) -> Diagnostics:
    """No runbook for this service: say so, and what PagerDuty told us."""
    service = event.service_name or "unknown service"
    facts = Check(
        name="incident facts",
        status="warn",
        output=f"urgency {event.urgency}, priority {event.priority or 'none'}, "
        f"assigned to {', '.join(a.summary or a.id for a in event.assignees) or 'nobody'}",
        duration_ms=0,
    )
    verdict = summarise([facts])
    summary = f"{verdict.summary}\nAssessment: no runbook for {service}; needs a human."
    return Diagnostics(
        service=service,
        runbook="generic",
        healthy=False,
        remediation_available=False,
        confidence=0.0,
        summary=summary,
        checks=[facts],
    )


Runbook = Callable[[IncidentEvent], Awaitable[Diagnostics]]
RUNBOOKS: dict[str, Runbook] = {"checkout-api": checkout_api}


@node("run-diagnostics", timeout=60)
async def run_diagnostics(event: IncidentEvent) -> Diagnostics:
    """The service's runbook, or the generic fallback."""
    return await RUNBOOKS.get(event.service_name or "", generic)(event)


@node("remediate", retry=RetryPolicy(max_attempts=3, initial_interval=2.0), timeout=60)
async def remediate(diagnostics: Diagnostics) -> Remediation:
    """Apply the fix the diagnostics proposed, then check the service came back."""
    url, health = diagnostics.remediation_url, diagnostics.health_url
    if not (url and health and diagnostics.remediation):
        raise NonRetryableError("the diagnostics proposed no remediation")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.post(url) as resp,
    ):
        resp.raise_for_status()  # a retryable failure: restarting again is harmless
        answer = await resp.text()
    for _ in range(RECOVERY_CHECKS):
        check = await check_http(health, name=f"{diagnostics.service} /health")
        if check.status == "ok":
            return Remediation(action=diagnostics.remediation, success=True, detail=check.output)
        await asyncio.sleep(RECOVERY_INTERVAL)
    detail = f"still unhealthy after {diagnostics.remediation}: {check.output} ({answer[:200]})"
    return Remediation(action=diagnostics.remediation, success=False, detail=detail)
