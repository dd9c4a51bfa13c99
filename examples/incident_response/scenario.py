"""The demo's story, and the PagerDuty side of it.

``PagerDuty`` plays PagerDuty and its users: it opens incidents in the sandbox the way a
monitoring alert does (Events API), acknowledges them as a responder would, and
delivers the signed v3 webhooks PagerDuty sends for each change, shaped like the ones
PagerDuty really sends (``event.data`` is the incident). ``play`` runs the story: one
incident that Resolute fixes by itself, and one nobody acknowledges.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from providers import pagerduty
from providers.sandbox import PEOPLE, Person

from .launcher import Stack

__all__ = ["Delivery", "DemoIncidents", "PagerDuty", "play", "until"]

ALICE = next(p for p in PEOPLE if p.key == "alice")


@dataclass(frozen=True)
class Delivery:
    """One webhook as PagerDuty sends it: the raw body and its delivery id."""

    body: bytes
    webhook_id: str


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PagerDuty:
    def __init__(self, http: aiohttp.ClientSession, stack: Stack) -> None:
        env = stack.sandbox.env()
        self.http = http
        self.base = env["PAGERDUTY_BASE_URL"]
        self.events_url = env["PAGERDUTY_EVENTS_URL"]
        self.routing_key = env["PAGERDUTY_ROUTING_KEY"]
        self.auth = {"Authorization": f"Token token={env['PAGERDUTY_API_KEY']}"}
        self.webhook_url = stack.webhook_url
        self.secret = stack.webhook_secret

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.http.request(method, url, **kwargs) as resp:
            body = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {body}")
            return body

    async def alert(self, summary: str, *, severity: str, source: str, dedup_key: str) -> Any:
        """A monitoring alert (Events API v2); returns the incident PagerDuty opened."""
        event = {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {"summary": summary, "severity": severity, "source": source},
        }
        await self._json("POST", self.events_url, json=event)
        found = await self._json(
            "GET", f"{self.base}/incidents", params={"incident_key": dedup_key}, headers=self.auth
        )
        return found["incidents"][-1]

    async def incident(self, incident_id: str) -> Any:
        found = await self._json("GET", f"{self.base}/incidents/{incident_id}", headers=self.auth)
        return found["incident"]

    async def acknowledge(self, incident: dict[str, Any], person: Person) -> Any:
        """What a responder pressing "Acknowledge" does (refused once it is resolved, as
        PagerDuty does; the sandbox would accept it)."""
        if (await self.incident(incident["id"]))["status"] == "resolved":
            raise RuntimeError(f"{incident['id']} is already resolved: too late to acknowledge")
        change = {"incident": {"type": "incident_reference", "status": "acknowledged"}}
        headers = {**self.auth, "From": person.email}
        url = f"{self.base}/incidents/{incident['id']}"
        return (await self._json("PUT", url, json=change, headers=headers))["incident"]

    def user(self, person: Person) -> dict[str, Any]:
        return {
            "id": person.pagerduty_id,
            "type": "user_reference",
            "summary": person.name,
            "self": f"{self.base}/users/{person.pagerduty_id}",
            "html_url": f"{self.base}/ui/users/{person.pagerduty_id}",
        }

    def integration(self, incident: dict[str, Any]) -> dict[str, Any]:
        """The agent of changes made through the Events API: the service's integration."""
        return {**incident["service"], "summary": "Events API"}

    def webhook(
        self,
        event_type: str,
        incident: dict[str, Any],
        agent: dict[str, Any] | None,
        occurred_at: datetime | None = None,
    ) -> Delivery:
        """The v3 webhook PagerDuty sends when ``incident`` goes through ``event_type``."""
        status = event_type.removeprefix("incident.")
        data = {
            "id": incident["id"],
            "type": "incident",
            "self": incident["self"],
            "html_url": incident["html_url"],
            "number": incident["incident_number"],
            "status": status if status in ("triggered", "acknowledged", "resolved") else None,
            "incident_key": incident["incident_key"],
            "created_at": incident["created_at"],
            "title": incident["title"],
            "service": incident["service"],
            "assignees": [a["assignee"] for a in incident["assignments"]],
            "escalation_policy": incident["escalation_policy"],
            "teams": incident["teams"],
            "priority": None,
            "urgency": incident["urgency"],
            "conference_bridge": None,
            "resolve_reason": None,
        }
        body = {
            "event": {
                "id": uuid.uuid4().hex[:26].upper(),
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": _iso(occurred_at or datetime.now(UTC)),
                "agent": agent,
                "client": None,
                "data": data,
            }
        }
        return Delivery(json.dumps(body).encode(), str(uuid.uuid4()))

    async def send(self, delivery: Delivery) -> Any:
        """POST it signed like PagerDuty does; the service answers 202 with its runs."""
        headers = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": pagerduty.sign(delivery.body, self.secret),
            "X-Webhook-Id": delivery.webhook_id,
        }
        return await self._json("POST", self.webhook_url, data=delivery.body, headers=headers)

    async def deliver(
        self,
        event_type: str,
        incident: dict[str, Any],
        agent: dict[str, Any] | None,
        occurred_at: datetime | None = None,
    ) -> Any:
        return await self.send(self.webhook(event_type, incident, agent, occurred_at))


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 30
) -> None:
    """Poll ``check`` until it holds; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class DemoIncidents:
    remediated: dict[str, Any]  # fixed by Resolute, acknowledged by Alice, resolved
    escalated: dict[str, Any]  # nobody acknowledges it: escalated to management


Say = Callable[[str], Awaitable[None]]


def _posted(stack: Stack, text: str) -> bool:
    return any(text in m["text"] for m in stack.sandbox.state()["slack"]["messages"])


async def play(stack: Stack, pd: PagerDuty, say: Say) -> DemoIncidents:
    """Break the sample service twice and let PagerDuty tell Resolute about it."""
    await say("checkout-api's database connection pool runs dry: /health answers 503, slowly")
    stack.sample.break_("connection-pool-exhausted", latency=1.5)
    first = await pd.alert(
        "checkout-api: 5xx rate above 20% for 5 minutes",
        severity="critical",
        source="alertmanager/checkout-api",
        dedup_key="checkout-api/high-5xx-rate",
    )
    await say(f"PagerDuty opens {first['summary']} ({first['id']}) and sends incident.triggered")
    runs = (await pd.deliver("incident.triggered", first, pd.integration(first)))["run_ids"]
    await say(f"  the webhook started {len(runs)} runs, one per flow on the route")

    await until(lambda: _posted(stack, first["html_url"]), "the Slack alert")
    await asyncio.sleep(0.5)  # reading it; diagnostics take longer (the service is slow)
    await say(f"{ALICE.name} sees the alert in #incidents and acknowledges it")
    first = await pd.acknowledge(first, ALICE)
    await pd.deliver("incident.acknowledged", first, pd.user(ALICE))

    async def resolved() -> bool:
        return str((await pd.incident(first["id"]))["status"]) == "resolved"

    await until(resolved, "Resolute to resolve the PagerDuty alert", timeout=45)
    first = await pd.incident(first["id"])
    await say("PagerDuty saw the alert resolved and sends incident.resolved")
    await pd.deliver("incident.resolved", first, pd.integration(first))

    await say("checkout-api's payment gateway starts timing out (a restart will not help)")
    stack.sample.break_("payment-gateway-timeouts")
    second = await pd.alert(
        "checkout-api: payment authorisations timing out",
        severity="error",
        source="alertmanager/checkout-api",
        dedup_key="checkout-api/payment-timeouts",
    )
    await say(
        f"PagerDuty opens {second['summary']} ({second['id']}); nobody will acknowledge it "
        f"(escalation after {stack.escalate_after:g} s)"
    )
    await pd.deliver("incident.triggered", second, pd.integration(second))
    return DemoIncidents(remediated=first, escalated=second)
