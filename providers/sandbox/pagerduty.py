"""Fake PagerDuty: REST v2 incidents, notes and on-calls, and Events API v2 enqueue.

Triggering an event opens an incident on the routing key's service (de-duplicated by
``dedup_key`` while it is open), assigned to the level-1 on-call; acknowledge/resolve
events and ``PUT /incidents/{id}`` move it along. Shapes follow the vendor's examples.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .fake import Fake, now
from .seed import CREDENTIALS, PEOPLE

__all__ = ["PagerDutyFake"]

_CODES = {400: 2001, 401: 2006, 403: 2010, 404: 2100, 429: 2020}
_SEVERITIES = ("critical", "error", "warning", "info")
_ENQUEUE = "/v2/enqueue"
_SERVICE = "PSVC001"
_POLICY = "PEP0001"


def _ref(kind: str, obj: dict[str, Any], origin: str, collection: str) -> dict[str, Any]:
    return {
        "id": obj["id"],
        "type": f"{kind}_reference",
        "summary": obj.get("summary") or obj.get("name"),
        "self": f"{origin}/{collection}/{obj['id']}",
        "html_url": f"{origin}/ui/{collection}/{obj['id']}",
    }


class PagerDutyFake(Fake):
    vendor = "pagerduty"
    max_page = 100  # PagerDuty's cap on ``limit``; tests lower it to exercise paging

    def __init__(self) -> None:
        super().__init__()
        # Kept out of ``state`` so that state dumps never show an integration key.
        self._service_by_routing_key = {CREDENTIALS["pagerduty_routing_key"]: _SERVICE}
        self.state = {
            "users": {
                p.pagerduty_id: {
                    "id": p.pagerduty_id,
                    "name": p.name,
                    "email": p.email,
                    "time_zone": p.time_zone,
                    "role": "user",
                }
                for p in PEOPLE
            },
            "services": {
                _SERVICE: {"id": _SERVICE, "name": "checkout-api", "escalation_policy": _POLICY}
            },
            "escalation_policies": {_POLICY: {"id": _POLICY, "name": "Checkout on-call"}},
            "schedules": {
                "PSCHED1": {"id": "PSCHED1", "name": "Checkout primary"},
                "PSCHED2": {"id": "PSCHED2", "name": "Checkout secondary"},
            },
            "oncalls": [
                {"user": p.pagerduty_id, "policy": _POLICY, "schedule": s, "level": level}
                for level, (p, s) in enumerate(zip(PEOPLE, ("PSCHED1", "PSCHED2"), strict=True), 1)
            ],
            "incidents": {},
            "notes": {},
            "events": [],
        }

    # -- vendor conventions -------------------------------------------------------------

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        if request.path == _ENQUEUE:
            if status == 429:  # PagerDuty publishes no body for an Events API 429
                return web.Response(status=429)
            return web.json_response(
                {"status": "invalid event", "message": message, "errors": []},
                status=status,
            )
        body: dict[str, Any] = {"message": message, "code": _CODES.get(status, 2001)}
        response = web.json_response({"error": body}, status=status)
        if status == 429:
            response.headers.update({"ratelimit-limit": "960", "ratelimit-remaining": "0"})
        return response

    def authorised(self, request: web.Request) -> web.StreamResponse | None:
        if request.path == _ENQUEUE:  # the routing key in the body authenticates
            return None
        expected = f"Token token={CREDENTIALS['pagerduty_api_key']}"
        if request.headers.get("Authorization") != expected:
            return self.error(request, 401, "Authentication failed")
        return None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(_ENQUEUE, self.enqueue),
            web.get("/incidents", self.list_incidents),
            web.get("/incidents/{id}", self.get_incident),
            web.put("/incidents/{id}", self.update_incident),
            web.get("/incidents/{id}/notes", self.list_notes),
            web.post("/incidents/{id}/notes", self.add_note),
            web.get("/oncalls", self.oncalls),
        ]

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _user_ref(self, user_id: str, origin: str) -> dict[str, Any]:
        user = self.state["users"][user_id]
        return _ref("user", {"id": user_id, "summary": user["name"]}, origin, "users")

    def _user(self, user_id: str, origin: str) -> dict[str, Any]:
        """A user expanded by ``include[]=users``: still typed as a reference, because the
        contract types ``Oncall.user`` as ``UserReference`` only."""
        user = self.state["users"][user_id]
        return {
            **self._user_ref(user_id, origin),
            "name": user["name"],
            "email": user["email"],
            "time_zone": user["time_zone"],
            "role": user["role"],
        }

    def _requester(self, request: web.Request) -> str | web.Response:
        email = request.headers.get("From")
        if not email:
            return self.error(
                request, 400, "You must specify a requester_id to perform this action"
            )
        for user in self.state["users"].values():
            if user["email"].casefold() == email.casefold():
                return str(user["id"])
        return self.error(request, 400, f"Invalid Input Provided: no user with email {email}")

    def _incident(self, request: web.Request) -> dict[str, Any] | web.Response:
        incident = self.state["incidents"].get(request.match_info["id"])
        return incident if incident is not None else self.error(request, 404, "Not Found")

    def _open(self, service: str, dedup_key: str, payload: dict[str, Any], origin: str) -> None:
        number = self.next_id()
        incident_id = f"Q{number:06d}"
        at = now()
        oncall = next(o for o in self.state["oncalls"] if o["level"] == 1)
        svc = self.state["services"][service]
        policy = self.state["escalation_policies"][svc["escalation_policy"]]
        self.state["incidents"][incident_id] = {
            "id": incident_id,
            "type": "incident",
            "summary": f"[#{number}] {payload['summary']}",
            "self": f"{origin}/incidents/{incident_id}",
            "html_url": f"{origin}/ui/incidents/{incident_id}",
            "incident_number": number,
            "title": payload["summary"],
            "created_at": at,
            "updated_at": at,
            "status": "triggered",
            "incident_key": dedup_key,
            "service": _ref("service", {"id": service, "summary": svc["name"]}, origin, "services"),
            "assignments": [{"at": at, "assignee": self._user_ref(oncall["user"], origin)}],
            "assigned_via": "escalation_policy",
            "acknowledgements": [],
            "last_status_change_at": at,
            "escalation_policy": _ref(
                "escalation_policy",
                {"id": policy["id"], "summary": policy["name"]},
                origin,
                "escalation_policies",
            ),
            "teams": [],
            "urgency": "high" if payload["severity"] in ("critical", "error") else "low",
            "resolved_at": None,
            "alert_counts": {"all": 1, "triggered": 1, "resolved": 0},
            "pending_actions": [],
            "is_mergeable": True,
            "incident_type": {"name": "incident_default"},
        }

    def _set_status(self, incident: dict[str, Any], status: str, by: dict[str, Any]) -> None:
        at = now()
        if status == "acknowledged" and incident["status"] != "resolved":
            incident["acknowledgements"].append({"at": at, "acknowledger": by})
        if status == "resolved":
            incident["resolved_at"] = at
            incident["alert_counts"] = {"all": 1, "triggered": 0, "resolved": 1}
        incident.update(status=status, updated_at=at, last_status_change_at=at)
        incident["last_status_change_by"] = by

    # -- Events API v2 ----------------------------------------------------------------------

    async def enqueue(self, request: web.Request) -> web.Response:
        try:
            event = await request.json()
        except ValueError:
            return web.json_response(
                {
                    "status": "Unrecognized object",
                    "message": "Event object format is unrecognized",
                    "errors": ["JSON parse error"],
                },
                status=400,
            )
        problems = []
        if not isinstance(event, dict):
            event, problems = {}, ["Event object format is unrecognized"]
        service = self._service_by_routing_key.get(str(event.get("routing_key", "")))
        if service is None:
            problems.append("Invalid routing key")
        action = event.get("event_action")
        dedup_key = event.get("dedup_key")
        payload: dict[str, Any] = event["payload"] if isinstance(event.get("payload"), dict) else {}
        if action not in ("trigger", "acknowledge", "resolve"):
            problems.append(
                "'event_action' is invalid (must be one of: trigger acknowledge resolve)"
            )
        elif action == "trigger":
            for name in ("summary", "source"):
                if not payload.get(name):
                    problems.append(f"'payload.{name}' is missing or blank")
            if payload.get("severity") not in _SEVERITIES:
                problems.append(
                    "'payload.severity' is invalid (must be one of: critical error warning info)"
                )
        elif not dedup_key:
            problems.append("'dedup_key' is required for acknowledge and resolve events")
        if problems:
            return web.json_response(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": problems,
                },
                status=400,
            )
        assert service is not None
        dedup_key = str(dedup_key or f"sandbox-{self.next_id():08d}")
        self.state["events"].append(
            {
                "event_action": action,
                "dedup_key": dedup_key,
                "summary": payload.get("summary"),
                "severity": payload.get("severity"),
                "received_at": now(),
            }
        )
        open_incident = next(
            (
                i
                for i in self.state["incidents"].values()
                if i["incident_key"] == dedup_key and i["status"] != "resolved"
            ),
            None,
        )
        by = _ref(
            "service", {"id": service, "summary": "Events API"}, self._origin(request), "services"
        )
        if action == "trigger" and open_incident is None:
            self._open(service, dedup_key, payload, self._origin(request))
        elif open_incident is not None and action != "trigger":
            self._set_status(
                open_incident, "acknowledged" if action == "acknowledge" else "resolved", by
            )
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, status=202
        )

    # -- REST API v2 -----------------------------------------------------------------------

    def _page(self, request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
        try:
            limit = min(int(request.query.get("limit", 25)), self.max_page)
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return self.error(request, 400, "Invalid Input Provided: limit and offset are integers")
        page = items[offset : offset + limit]
        total = len(items) if request.query.get("total") == "true" else None
        return web.json_response(
            {
                key: page,
                "limit": limit,
                "offset": offset,
                "more": offset + limit < len(items),
                "total": total,
            }
        )

    async def list_incidents(self, request: web.Request) -> web.Response:
        statuses = request.query.getall("statuses[]", [])
        services = request.query.getall("service_ids[]", [])
        key = request.query.get("incident_key")
        items = [
            i
            for i in self.state["incidents"].values()
            if (not statuses or i["status"] in statuses)
            and (not services or i["service"]["id"] in services)
            and (key is None or i["incident_key"] == key)
        ]
        return self._page(request, "incidents", items)

    async def get_incident(self, request: web.Request) -> web.Response:
        incident = self._incident(request)
        if isinstance(incident, web.Response):
            return incident
        return web.json_response({"incident": incident})

    async def update_incident(self, request: web.Request) -> web.Response:
        incident = self._incident(request)
        if isinstance(incident, web.Response):
            return incident
        requester = self._requester(request)
        if isinstance(requester, web.Response):
            return requester
        body = await request.json()
        change = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(change, dict):
            return self.error(request, 400, "Invalid Input Provided: 'incident' is required")
        origin = self._origin(request)
        if "assignments" in change:
            assignees = [a.get("assignee", {}).get("id") for a in change["assignments"]]
            unknown = [a for a in assignees if a not in self.state["users"]]
            if unknown:
                return self.error(request, 400, f"Invalid Input Provided: unknown users {unknown}")
            incident["assignments"] = [
                {"at": now(), "assignee": self._user_ref(a, origin)} for a in assignees
            ]
        if "escalation_level" in change:
            level = change["escalation_level"]
            match = [o for o in self.state["oncalls"] if o["level"] == level]
            if not match:
                return self.error(
                    request, 400, f"Invalid Input Provided: no escalation level {level}"
                )
            incident["assignments"] = [
                {"at": now(), "assignee": self._user_ref(match[0]["user"], origin)}
            ]
        if status := change.get("status"):
            if status not in ("acknowledged", "resolved", "triggered"):
                return self.error(request, 400, f"Invalid Input Provided: status {status!r}")
            self._set_status(incident, status, self._user_ref(requester, origin))
            if change.get("resolution"):
                incident["resolution_note"] = change["resolution"]
        incident["updated_at"] = now()
        return web.json_response({"incident": incident})

    async def list_notes(self, request: web.Request) -> web.Response:
        incident = self._incident(request)
        if isinstance(incident, web.Response):
            return incident
        return web.json_response({"notes": self.state["notes"].get(incident["id"], [])})

    async def add_note(self, request: web.Request) -> web.Response:
        incident = self._incident(request)
        if isinstance(incident, web.Response):
            return incident
        requester = self._requester(request)
        if isinstance(requester, web.Response):
            return requester
        body = await request.json()
        content = (body.get("note") or {}).get("content") if isinstance(body, dict) else None
        if not isinstance(content, str) or not content:
            return self.error(request, 400, "Invalid Input Provided: note content is required")
        at = now()
        note = {
            "id": f"PN{self.next_id():05d}",
            "user": self._user_ref(requester, self._origin(request)),
            "channel": {"summary": "The PagerDuty website or APIs"},
            "content": content,
            "created_at": at,
            "updated_at": at,
        }
        self.state["notes"].setdefault(incident["id"], []).append(note)
        return web.json_response({"note": note})

    async def oncalls(self, request: web.Request) -> web.Response:
        origin = self._origin(request)
        expand = "users" in request.query.getall("include[]", [])
        policies = request.query.getall("escalation_policy_ids[]", [])
        schedules = request.query.getall("schedule_ids[]", [])
        users = request.query.getall("user_ids[]", [])
        items = []
        for o in self.state["oncalls"]:
            if (
                (policies and o["policy"] not in policies)
                or (schedules and o["schedule"] not in schedules)
                or (users and o["user"] not in users)
            ):
                continue
            policy = self.state["escalation_policies"][o["policy"]]
            schedule = self.state["schedules"][o["schedule"]]
            items.append(
                {
                    "user": self._user(o["user"], origin)
                    if expand
                    else self._user_ref(o["user"], origin),
                    "schedule": _ref("schedule", schedule, origin, "schedules"),
                    "escalation_policy": _ref(
                        "escalation_policy", policy, origin, "escalation_policies"
                    ),
                    "escalation_level": o["level"],
                    "start": "2026-01-01T00:00:00Z",
                    "end": "2099-01-01T00:00:00Z",
                }
            )
        return self._page(request, "oncalls", items)
