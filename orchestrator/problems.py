"""How failures become HTTP answers: a status and ``{"error": "..."}`` a person understands.

Every response the service sends on failure is JSON, including aiohttp's own 404, 405
and 413. PostgreSQL being unreachable is a 503 with ``Retry-After`` (senders such as
PagerDuty retry those); a value PostgreSQL cannot store is the client's 400.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import sqlalchemy.exc
from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import DatabaseUnavailableError, RunNotFoundError, UnknownFlowError

__all__ = [
    "BODY_LIMIT",
    "RETRY_AFTER_SECONDS",
    "Problem",
    "as_problem",
    "cannot_store",
    "json_errors",
    "parse_json",
    "too_large",
    "unavailable",
]

log = logging.getLogger("resolute.server")

BODY_LIMIT = web.AppKey("body_limit", int)
RETRY_AFTER_SECONDS = 5
# Connection, insufficient resources, operator intervention, no such database, bad
# credentials, serialization failure: nothing the request did; trying later may work.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "3D", "28", "40")
# Data exception (a NUL character, a number out of range), program limit (a key too long
# for its index): the request carried something PostgreSQL cannot store.
_INPUT_SQLSTATE_CLASSES = ("22", "54")


class Problem(Exception):
    """Raised by a handler to answer ``status`` with ``{"error": message[, "detail"]}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return web.json_response(body, status=self.status, headers=self.headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be used right now."""
    if isinstance(exc, OSError | TimeoutError | DatabaseUnavailableError):
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.InterfaceError):
        return True  # pool exhausted; connection closed under us
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return exc.connection_invalidated or _sqlstate(exc)[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


def cannot_store(exc: BaseException) -> bool:
    """True when PostgreSQL refused a value the request carried."""
    return (
        isinstance(exc, sqlalchemy.exc.DBAPIError) and _sqlstate(exc)[:2] in _INPUT_SQLSTATE_CLASSES
    )


def _database_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 saying why not. NaN, Infinity and numbers beyond a
    float are refused here: PostgreSQL's jsonb could not store them."""
    try:
        return json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None


def too_large(limit: int) -> Problem:
    return Problem(413, f"the request body is larger than the limit of {limit} bytes")


def as_problem(request: web.Request, exc: Exception) -> Problem:
    """The answer to an exception a handler let through."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        return Problem(405, message, headers={"Allow": allowed})
    if isinstance(exc, web.HTTPNotFound):
        return Problem(404, f"nothing at {request.path}: no webhook route or API endpoint")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.app[BODY_LIMIT])
    if isinstance(exc, web.HTTPException):
        return Problem(exc.status, exc.reason)
    if isinstance(exc, RunNotFoundError | UnknownFlowError):
        return Problem(404, str(exc))
    if unavailable(exc):
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        return Problem(  # the cause goes to the log, not to whoever is calling
            503,
            f"the database is unavailable; nothing was stored, try again in "
            f"{RETRY_AFTER_SECONDS} s",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if cannot_store(exc):
        return Problem(
            400, f"PostgreSQL cannot store a value of this request: {_database_message(exc)}"
        )
    log.error("unexpected error answering %s %s", request.method, request.path, exc_info=exc)
    return Problem(500, "internal error; the server log has the details")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return as_problem(request, exc).response()
    except Exception as exc:
        return as_problem(request, exc).response()
