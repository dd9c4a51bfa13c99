"""Fake Slack Web API: chat.postMessage, chat.update, conversations.open and
users.lookupByEmail, with Slack's conventions: arguments as JSON, form or query; errors
as HTTP 200 ``{"ok": false, "error": code}``; rate limits as 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .fake import Fake
from .seed import CREDENTIALS, PEOPLE

__all__ = ["SlackFake"]

_TEAM = "T0SANDBOX"
_BOT = "B0RESOLUTE"
_BLOCK_TYPES = frozenset(
    {
        "section",
        "divider",
        "header",
        "context",
        "actions",
        "image",
        "input",
        "rich_text",
        "file",
        "video",
        "markdown",
    }
)
_MAX_BLOCKS = 50


class SlackFake(Fake):
    vendor = "slack"

    def __init__(self) -> None:
        super().__init__()
        self.state = {
            "channels": {
                "C0INCIDENT": {"id": "C0INCIDENT", "name": "incidents", "is_channel": True},
                "C0OPSCHAT1": {"id": "C0OPSCHAT1", "name": "ops", "is_channel": True},
            },
            "users": {
                p.slack_id: {
                    "id": p.slack_id,
                    "team_id": _TEAM,
                    "name": p.key,
                    "real_name": p.name,
                    "tz": p.time_zone,
                    "deleted": False,
                    "is_admin": False,
                    "is_bot": False,
                    "is_app_user": False,
                    "updated": 1_700_000_000,
                    "profile": {
                        "real_name": p.name,
                        "real_name_normalized": p.name,
                        "display_name": p.key,
                        "display_name_normalized": p.key,
                        "email": p.email,
                        "team": _TEAM,
                        "avatar_hash": "g0000000000a",
                        "title": "Site Reliability Engineer",
                        "phone": "",
                        "skype": "",
                        "status_text": "",
                        "status_emoji": "",
                        "fields": None,
                    },
                }
                for p in PEOPLE
            },
            "dms": {},
            "messages": [],
        }

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        code = {429: "ratelimited"}.get(status, "internal_error" if status >= 500 else message)
        return web.json_response({"ok": False, "error": code}, status=status)

    def _fail(self, code: str) -> web.Response:
        return web.json_response({"ok": False, "error": code})

    def authorised(self, request: web.Request) -> web.StreamResponse | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() or request.query.get("token", "")
        if not token:
            return self._fail("not_authed")
        if token != CREDENTIALS["slack_bot_token"]:
            return self._fail("invalid_auth")
        return None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/chat.postMessage", self.post_message),
            web.post("/api/chat.update", self.update_message),
            web.post("/api/conversations.open", self.open_conversation),
            web.route("*", "/api/users.lookupByEmail", self.lookup_by_email),
        ]

    @staticmethod
    async def _args(request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            args.update(body if isinstance(body, dict) else {})
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return args

    def _channel(self, ref: str) -> str | None:
        ref = ref.removeprefix("#")
        if ref in self.state["channels"] or ref in self.state["dms"].values():
            return ref
        if ref in self.state["users"]:  # posting to a user id lands in the DM
            return self._dm(ref)
        return next((c["id"] for c in self.state["channels"].values() if c["name"] == ref), None)

    def _dm(self, user_id: str) -> str:
        return str(self.state["dms"].setdefault(user_id, f"D0{user_id[2:]}"))

    def _ts(self) -> str:
        return f"{time.time():.0f}.{self.next_id():06d}"

    @staticmethod
    def _blocks(value: Any) -> list[dict[str, Any]] | None:
        """The blocks (``None`` when absent); ``ValueError`` when invalid."""
        if value is None:
            return None
        if isinstance(value, str):  # form-encoded requests carry blocks as JSON text
            value = json.loads(value)
        if not (
            isinstance(value, list)
            and len(value) <= _MAX_BLOCKS
            and all(isinstance(b, dict) and b.get("type") in _BLOCK_TYPES for b in value)
        ):
            raise ValueError("invalid blocks")
        return value

    def _message(self, text: str, ts: str, blocks: list[dict[str, Any]] | None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": ts,
            "username": "Resolute",
            "bot_id": _BOT,
        }
        if blocks:
            message["blocks"] = blocks
        return message

    async def post_message(self, request: web.Request) -> web.Response:
        args = await self._args(request)
        channel = self._channel(str(args.get("channel") or ""))
        if channel is None:
            return self._fail("channel_not_found")
        try:
            blocks = self._blocks(args.get("blocks"))
        except ValueError:
            return self._fail("invalid_blocks")
        text = str(args.get("text") or "")
        if not text and not blocks:
            return self._fail("no_text")
        ts = self._ts()
        message = self._message(text, ts, blocks)
        record = {"channel": channel, **message, "thread_ts": args.get("thread_ts")}
        self.state["messages"].append(record)
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})

    async def update_message(self, request: web.Request) -> web.Response:
        args = await self._args(request)
        channel = self._channel(str(args.get("channel") or ""))
        if channel is None:
            return self._fail("channel_not_found")
        record = next(
            (
                m
                for m in self.state["messages"]
                if m["channel"] == channel and m["ts"] == args.get("ts")
            ),
            None,
        )
        if record is None:
            return self._fail("message_not_found")
        try:
            blocks = self._blocks(args.get("blocks"))
        except ValueError:
            return self._fail("invalid_blocks")
        record["text"] = str(args.get("text") or record["text"])
        if blocks is not None:
            record["blocks"] = blocks
        record["edited"] = {"user": _BOT, "ts": self._ts()}
        message = self._message(record["text"], record["ts"], record.get("blocks"))
        return web.json_response(
            {
                "ok": True,
                "channel": channel,
                "ts": record["ts"],
                "text": record["text"],
                "message": message,
            }
        )

    async def open_conversation(self, request: web.Request) -> web.Response:
        args = await self._args(request)
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if len(users) != 1:
            return self._fail("users_list_not_supplied" if not users else "not_enough_users")
        if users[0] not in self.state["users"]:
            return self._fail("user_not_found")
        already = users[0] in self.state["dms"]
        channel = self._dm(users[0])
        answer: dict[str, Any] = {"ok": True, "channel": {"id": channel}}
        if already:
            answer.update(no_op=True, already_open=True)
        return web.json_response(answer)

    async def lookup_by_email(self, request: web.Request) -> web.Response:
        args = await self._args(request)
        email = str(args.get("email") or "").casefold()
        if not email:
            return self._fail("invalid_email")
        user = next(
            (u for u in self.state["users"].values() if u["profile"]["email"].casefold() == email),
            None,
        )
        if user is None:
            return self._fail("users_not_found")
        return web.json_response({"ok": True, "user": user})
