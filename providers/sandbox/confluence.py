"""Fake Confluence Cloud (REST v2 under ``/wiki/api/v2``): spaces by key, pages by
space and title, page creation with a storage-format body, and the v1 label endpoint.

Titles are unique per space, as on the real site: a duplicate create is a 400.
"""

from __future__ import annotations

import base64
import urllib.parse
import zlib
from typing import Any

from aiohttp import web

from .fake import Fake, now
from .seed import CREDENTIALS

__all__ = ["ConfluenceFake"]

_AUTHOR = "557058:resolute-bot"
_ERROR_CODES = {
    400: "INVALID_REQUEST_PARAMETER",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    429: "TOO_MANY_REQUESTS",
}


class ConfluenceFake(Fake):
    vendor = "confluence"

    def __init__(self) -> None:
        super().__init__()
        self.state = {
            "spaces": {
                "65538": {
                    "id": "65538",
                    "key": "OPS",
                    "name": "Operations",
                    "type": "global",
                    "status": "current",
                    "authorId": _AUTHOR,
                    "createdAt": "2024-03-01T09:00:00.000Z",
                    "homepageId": "65539",
                    "_links": {"webui": "/spaces/OPS"},
                }
            },
            "pages": {
                "65539": self._page_record(
                    "65539", "OPS", "65538", "Operations Home", None, "<p>Home</p>"
                )
            },
            "labels": {},
        }

    @staticmethod
    def _page_record(
        page_id: str, space_key: str, space_id: str, title: str, parent_id: str | None, value: str
    ) -> dict[str, Any]:
        at = now()
        slug = urllib.parse.quote_plus(title)
        return {
            "id": page_id,
            "status": "current",
            "title": title,
            "spaceId": space_id,
            "parentId": parent_id,
            "parentType": "page" if parent_id else None,
            "authorId": _AUTHOR,
            "ownerId": _AUTHOR,
            "createdAt": at,
            "version": {
                "createdAt": at,
                "message": "",
                "number": 1,
                "minorEdit": False,
                "authorId": _AUTHOR,
            },
            "body": {"storage": {"representation": "storage", "value": value}},
            "_links": {
                "webui": f"/spaces/{space_key}/pages/{page_id}/{slug}",
                "editui": f"/pages/resumedraft.action?draftId={page_id}",
                "tinyui": f"/x/{page_id}",
            },
        }

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        code = _ERROR_CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "ERROR")
        return web.json_response(
            {"errors": [{"status": status, "code": code, "title": message, "detail": None}]},
            status=status,
        )

    def authorised(self, request: web.Request) -> web.StreamResponse | None:
        expected = (
            "Basic "
            + base64.b64encode(
                f"{CREDENTIALS['confluence_email']}:{CREDENTIALS['confluence_api_token']}".encode()
            ).decode()
        )
        if request.headers.get("Authorization") != expected:
            return self.error(request, 401, "Unauthorized")
        return None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/wiki/api/v2/spaces", self.spaces),
            web.get("/wiki/api/v2/pages", self.pages),
            web.post("/wiki/api/v2/pages", self.create_page),
            web.get("/wiki/api/v2/pages/{id}", self.get_page),
            web.post("/wiki/rest/api/content/{id}/label", self.add_labels),
        ]

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/wiki"

    def _bulk(self, request: web.Request, results: list[dict[str, Any]]) -> web.Response:
        return web.json_response({"results": results, "_links": {"base": self._base(request)}})

    @staticmethod
    def _summary(page: dict[str, Any]) -> dict[str, Any]:
        """A page as listed by ``GET /pages`` (no body unless asked for)."""
        return {k: v for k, v in page.items() if k != "body"}

    async def spaces(self, request: web.Request) -> web.Response:
        keys = {k for v in request.query.getall("keys", []) for k in v.split(",") if k}
        found = [s for s in self.state["spaces"].values() if not keys or s["key"] in keys]
        return self._bulk(request, found)

    async def pages(self, request: web.Request) -> web.Response:
        spaces = {s for v in request.query.getall("space-id", []) for s in v.split(",") if s}
        title = request.query.get("title")
        status = request.query.get("status", "current")
        found = [
            self._summary(p)
            for p in self.state["pages"].values()
            if (not spaces or p["spaceId"] in spaces)
            and (title is None or p["title"] == title)
            and p["status"] in status.split(",")
        ]
        return self._bulk(request, found)

    async def get_page(self, request: web.Request) -> web.Response:
        page = self.state["pages"].get(request.match_info["id"])
        if page is None:
            return self.error(request, 404, "Not Found")
        return web.json_response(
            {**page, "_links": {**page["_links"], "base": self._base(request)}}
        )

    async def create_page(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self.error(request, 400, "Invalid JSON body")
        if not isinstance(body, dict):
            return self.error(request, 400, "Invalid JSON body")
        space_id = str(body.get("spaceId") or "")
        title = str(body.get("title") or "").strip()
        content = body.get("body") or {}
        storage = content.get("storage", content) if isinstance(content, dict) else {}
        parent = body.get("parentId")
        if space_id not in self.state["spaces"]:
            return self.error(request, 400, f"No space with id {space_id!r}")
        if not title:
            return self.error(request, 400, "Title is required")
        if storage.get("representation") != "storage" or not isinstance(storage.get("value"), str):
            return self.error(request, 400, "Body must be {representation: storage, value}")
        if parent is not None and parent not in self.state["pages"]:
            return self.error(request, 400, f"No parent page with id {parent!r}")
        if any(
            p["spaceId"] == space_id and p["title"] == title for p in self.state["pages"].values()
        ):
            return self.error(request, 400, "A page with this title already exists")
        page_id = str(131072 + self.next_id())
        space_key = self.state["spaces"][space_id]["key"]
        page = self._page_record(page_id, space_key, space_id, title, parent, storage["value"])
        self.state["pages"][page_id] = page
        return web.json_response(
            {**page, "_links": {**page["_links"], "base": self._base(request)}}
        )

    async def add_labels(self, request: web.Request) -> web.Response:
        page_id = request.match_info["id"]
        if page_id not in self.state["pages"]:
            return web.json_response({"statusCode": 404, "message": "No content found"}, status=404)
        body = await request.json()
        names = [
            str(item.get("name")) for item in body if isinstance(item, dict) and item.get("name")
        ]
        labels = self.state["labels"].setdefault(page_id, [])
        labels.extend(n for n in names if n not in labels)
        results = [
            {"prefix": "global", "name": n, "id": str(zlib.crc32(n.encode())), "label": n}
            for n in labels
        ]
        return web.json_response(
            {"results": results, "start": 0, "limit": 200, "size": len(results)}
        )
