"""Fake Jira Cloud (REST v3): project OPS with a small workflow, issues, comments,
transitions, assignment, enhanced JQL search and user search.

Workflow: To Do -> In Progress -> Resolved / Done (and Reopen back to To Do).
Resolutions include "Auto-remediated". Rich text must be ADF, as in Jira v3.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from .fake import Fake, now
from .jql import JqlError, compile_jql
from .seed import CREDENTIALS, PEOPLE

__all__ = ["JiraFake"]

_STATUSES = {
    "To Do": ("10000", "new", "To Do", "blue-gray"),
    "In Progress": ("10001", "indeterminate", "In Progress", "yellow"),
    "Resolved": ("10002", "done", "Done", "green"),
    "Done": ("10003", "done", "Done", "green"),
}
# (id, name, target status, from statuses)
_TRANSITIONS = (
    ("11", "Start Progress", "In Progress", ("To Do",)),
    ("21", "Resolve", "Resolved", ("To Do", "In Progress")),
    ("31", "Done", "Done", ("To Do", "In Progress")),
    ("41", "Reopen", "To Do", ("Resolved", "Done")),
)
_RESOLUTIONS = ("Done", "Fixed", "Auto-remediated", "Won't Do", "Duplicate")
_ISSUE_TYPES = {"10001": "Task", "10002": "Bug", "10003": "Incident"}
_PRIORITIES = {"1": "Highest", "2": "High", "3": "Medium", "4": "Low", "5": "Lowest"}
_COMPONENTS = {"10100": "checkout-api", "10101": "payments", "10102": "database"}
_PAGE = 50


def _is_adf(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "doc"
        and value.get("version") == 1
        and isinstance(value.get("content"), list)
    )


def _by_name(table: dict[str, str], value: Any) -> tuple[str, str] | None:
    """``(id, name)`` for ``{"name": ...}`` or ``{"id": ...}``, case-insensitively."""
    if not isinstance(value, dict):
        return None
    for id_, name in table.items():
        if value.get("id") == id_ or str(value.get("name", "")).casefold() == name.casefold():
            return id_, name
    return None


def _sort_key(issue: dict[str, Any], field: str) -> str:
    value = issue["fields"].get(field) or issue.get(field) or ""
    return str(value.get("name", "")) if isinstance(value, dict) else str(value)


class JiraFake(Fake):
    vendor = "jira"
    # Jira "may return fewer items per page" than maxResults when fields are requested;
    # tests lower this to exercise nextPageToken paging.
    max_page = 100

    def __init__(self) -> None:
        super().__init__()
        bot = {
            "accountId": "557058:resolute-bot",
            "displayName": "Resolute",
            "emailAddress": CREDENTIALS["jira_email"],
        }
        self.state = {
            "projects": {"OPS": {"id": "10000", "key": "OPS", "name": "Operations"}},
            "users": [
                {"accountId": p.jira_account_id, "displayName": p.name, "emailAddress": p.email}
                for p in PEOPLE
            ]
            + [bot],
            "issues": {},
            "comments": {},
        }
        self._next_issue = 10000
        self._expected_auth = (
            "Basic "
            + base64.b64encode(
                f"{CREDENTIALS['jira_email']}:{CREDENTIALS['jira_api_token']}".encode()
            ).decode()
        )

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        return web.json_response({"errorMessages": [message], "errors": {}}, status=status)

    def _field_errors(self, errors: dict[str, str]) -> web.Response:
        return web.json_response({"errorMessages": [], "errors": errors}, status=400)

    def authorised(self, request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Authorization") != self._expected_auth:
            return self.error(request, 401, "You are not authenticated. Authentication required.")
        return None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/rest/api/3/issue", self.create_issue),
            web.get("/rest/api/3/issue/{key}", self.get_issue),
            web.post("/rest/api/3/issue/{key}/comment", self.add_comment),
            web.get("/rest/api/3/issue/{key}/transitions", self.list_transitions),
            web.post("/rest/api/3/issue/{key}/transitions", self.transition),
            web.put("/rest/api/3/issue/{key}/assignee", self.assign),
            web.post("/rest/api/3/search/jql", self.search),
            web.get("/rest/api/3/user/search", self.user_search),
        ]

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _user(self, user: dict[str, Any], origin: str) -> dict[str, Any]:
        return {
            **user,
            "self": f"{origin}/rest/api/3/user?accountId={user['accountId']}",
            "accountType": "atlassian",
            "active": True,
            "timeZone": "UTC",
        }

    def _bot(self, origin: str) -> dict[str, Any]:
        return self._user(self.state["users"][-1], origin)

    def _status(self, name: str, origin: str) -> dict[str, Any]:
        id_, key, category, colour = _STATUSES[name]
        return {
            "self": f"{origin}/rest/api/3/status/{id_}",
            "id": id_,
            "name": name,
            "statusCategory": {"key": key, "name": category, "colorName": colour},
        }

    def _issue(self, request: web.Request) -> dict[str, Any] | web.Response:
        key = request.match_info["key"].upper()
        issue: dict[str, Any] | None = self.state["issues"].get(key) or next(
            (i for i in self.state["issues"].values() if i["id"] == key), None
        )
        if issue is None:
            return self.error(
                request, 404, "Issue does not exist or you do not have permission to see it."
            )
        return issue

    @staticmethod
    def _with_fields(issue: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
        if fields is None or "*all" in fields or "*navigable" in fields:
            return issue
        return {**issue, "fields": {k: v for k, v in issue["fields"].items() if k in fields}}

    async def _json(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    # -- issues ------------------------------------------------------------------------------

    async def create_issue(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return self.error(request, 400, "Issue must be created with fields")
        errors: dict[str, str] = {}
        project = next(
            (
                p
                for p in self.state["projects"].values()
                if isinstance(fields.get("project"), dict)
                and fields["project"].get("key", fields["project"].get("id")) in (p["key"], p["id"])
            ),
            None,
        )
        if project is None:
            errors["project"] = "valid project is required"
        issue_type = _by_name(_ISSUE_TYPES, fields.get("issuetype"))
        if issue_type is None:
            errors["issuetype"] = "Specify an issue type"
        if not str(fields.get("summary") or "").strip():
            errors["summary"] = "You must specify a summary of the issue."
        priority = None
        if "priority" in fields and (priority := _by_name(_PRIORITIES, fields["priority"])) is None:
            errors["priority"] = "Specify the Priority (id or name) in the string format"
        components = [_by_name(_COMPONENTS, c) for c in fields.get("components") or []]
        if None in components:
            errors["components"] = "Component name is not valid"
        labels = fields.get("labels") or []
        if any(not isinstance(label, str) or " " in label for label in labels):
            errors["labels"] = "The label contains spaces which is invalid."
        for name in ("description", "environment"):
            if name in fields and not _is_adf(fields[name]):
                errors[name] = "Operation value must be an Atlassian Document (see the ADF)."
        if errors:
            return self._field_errors(errors)
        assert project is not None and issue_type is not None
        origin = self._origin(request)
        self._next_issue += 1
        number = len([k for k in self.state["issues"] if k.startswith(project["key"])]) + 1
        key, issue_id = f"{project['key']}-{number}", str(self._next_issue)
        at = now()
        custom = {k: v for k, v in fields.items() if k.startswith("customfield_")}
        self.state["issues"][key] = {
            "id": issue_id,
            "key": key,
            "self": f"{origin}/rest/api/3/issue/{issue_id}",
            "fields": {
                **custom,
                "summary": fields["summary"],
                "description": fields.get("description"),
                "project": {**project, "self": f"{origin}/rest/api/3/project/{project['id']}"},
                "issuetype": {"id": issue_type[0], "name": issue_type[1]},
                "priority": {"id": priority[0], "name": priority[1]} if priority else None,
                "labels": labels,
                "components": [{"id": c[0], "name": c[1]} for c in components if c],
                "status": self._status("To Do", origin),
                "resolution": None,
                "assignee": None,
                "reporter": self._bot(origin),
                "created": at,
                "updated": at,
            },
        }
        return web.json_response(
            {"id": issue_id, "key": key, "self": f"{origin}/rest/api/3/issue/{issue_id}"},
            status=201,
        )

    async def get_issue(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if isinstance(issue, web.Response):
            return issue
        fields = request.query.get("fields")
        return web.json_response(self._with_fields(issue, fields.split(",") if fields else None))

    def _comment(self, issue: dict[str, Any], body: Any, origin: str) -> dict[str, Any]:
        comment_id = str(20000 + self.next_id())
        at = now()
        comment = {
            "id": comment_id,
            "self": f"{origin}/rest/api/3/issue/{issue['id']}/comment/{comment_id}",
            "author": self._bot(origin),
            "updateAuthor": self._bot(origin),
            "body": body,
            "created": at,
            "updated": at,
            "jsdPublic": True,
        }
        self.state["comments"].setdefault(issue["key"], []).append(comment)
        return comment

    async def add_comment(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if isinstance(issue, web.Response):
            return issue
        body = await self._json(request)
        if not isinstance(body, dict) or not _is_adf(body.get("body")):
            return self._field_errors({"comment": "Comment body must be an Atlassian Document."})
        return web.json_response(
            self._comment(issue, body["body"], self._origin(request)), status=201
        )

    def _available(self, issue: dict[str, Any], origin: str) -> list[dict[str, Any]]:
        current = issue["fields"]["status"]["name"]
        return [
            {
                "id": id_,
                "name": name,
                "to": self._status(target, origin),
                "hasScreen": False,
                "isGlobal": False,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            for id_, name, target, sources in _TRANSITIONS
            if current in sources
        ]

    async def list_transitions(self, request: web.Request) -> web.Response:
        issue = self._issue(request)
        if isinstance(issue, web.Response):
            return issue
        return web.json_response(
            {"expand": "transitions", "transitions": self._available(issue, self._origin(request))}
        )

    async def transition(self, request: web.Request) -> web.StreamResponse:
        issue = self._issue(request)
        if isinstance(issue, web.Response):
            return issue
        origin = self._origin(request)
        body = await self._json(request)
        wanted = (body or {}).get("transition", {}).get("id") if isinstance(body, dict) else None
        match = next((t for t in self._available(issue, origin) if t["id"] == str(wanted)), None)
        if match is None:
            return self.error(
                request, 400, f"Transition id '{wanted}' is not valid for this issue."
            )
        assert isinstance(body, dict)
        resolution = (body.get("fields") or {}).get("resolution")
        if resolution is not None and not any(
            str(resolution.get("name", "")).casefold() == r.casefold() for r in _RESOLUTIONS
        ):
            return self._field_errors({"resolution": f"Resolution '{resolution}' is not valid."})
        comments = [
            c.get("add", {}).get("body") for c in (body.get("update") or {}).get("comment", [])
        ]
        if not all(_is_adf(c) for c in comments):
            return self._field_errors({"comment": "Comment body must be an Atlassian Document."})
        fields = issue["fields"]
        target = match["to"]["name"]
        fields["status"] = self._status(target, origin)
        done = _STATUSES[target][1] == "done"
        name = resolution["name"] if resolution else "Done"
        fields["resolution"] = {"name": name} if done else None
        fields["updated"] = now()
        for comment in comments:
            self._comment(issue, comment, origin)
        return web.Response(status=204)

    async def assign(self, request: web.Request) -> web.StreamResponse:
        issue = self._issue(request)
        if isinstance(issue, web.Response):
            return issue
        body = await self._json(request)
        if not isinstance(body, dict) or "accountId" not in body:
            return self.error(request, 400, "accountId is required")
        account = body["accountId"]
        user = next((u for u in self.state["users"] if u["accountId"] == account), None)
        if account is not None and user is None:
            return self._field_errors({"assignee": f"User '{account}' does not exist."})
        issue["fields"]["assignee"] = self._user(user, self._origin(request)) if user else None
        issue["fields"]["updated"] = now()
        return web.Response(status=204)

    async def search(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("jql"), str):
            return self.error(request, 400, "The JQL query is required")
        try:
            matches, order = compile_jql(body["jql"])
        except JqlError as exc:
            return self.error(request, 400, str(exc))
        found = [i for i in self.state["issues"].values() if matches(i)]
        for field, desc in reversed(order):  # stable sorts, last key first
            found.sort(key=lambda i: _sort_key(i, field), reverse=desc)
        try:
            token = body.get("nextPageToken")
            start = int(base64.b64decode(token).decode()) if token else 0
            size = int(body.get("maxResults") or _PAGE)
        except ValueError:
            return self.error(request, 400, "Invalid nextPageToken or maxResults")
        fields = body.get("fields") or ["id"]  # enhanced search returns only ids by default
        size = min(size, 5000 if fields == ["id"] else self.max_page)
        page = found[start : start + size]
        answer: dict[str, Any] = {
            "issues": [
                {"id": i["id"]} if fields == ["id"] else self._with_fields(i, fields) for i in page
            ],
            "isLast": start + size >= len(found),
        }
        if not answer["isLast"]:
            answer["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return web.json_response(answer)

    async def user_search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "").casefold()
        if not query:
            return self.error(request, 400, "One of 'query' or 'accountId' is required")
        origin = self._origin(request)
        hits = [
            self._user(u, origin)
            for u in self.state["users"]
            if query in u["emailAddress"].casefold() or query in u["displayName"].casefold()
        ]
        return web.json_response(hits)
