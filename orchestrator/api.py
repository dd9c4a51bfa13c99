"""The JSON API under ``/api/v1``: start runs, send signals, inspect, cancel and retry.

Request and response bodies are pydantic models; the OpenAPI 3.1 document served at
``/api/v1/openapi.json`` is generated from the same models. Every call but that
document needs ``Authorization: Bearer <RESOLUTE_API_TOKEN>``; without a configured
token the API stays closed (503) rather than open.
"""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import models_json_schema

from . import events as ev
from .errors import RunNotFoundError
from .problems import Problem, parse_json
from .store import RunInfo, Store

__all__ = [
    "API_PREFIX",
    "OPENAPI_PATH",
    "Api",
    "CancelRun",
    "ErrorBody",
    "RunEvents",
    "RunPage",
    "SendSignal",
    "SentSignal",
    "StartRun",
    "StartedRun",
    "openapi_document",
]

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
_KEY_LENGTH = 512  # keys are indexed; PostgreSQL refuses index rows over ~2.7 KB
_STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
M = TypeVar("M", bound=BaseModel)

Key = Annotated[str, Field(min_length=1, max_length=_KEY_LENGTH)]
Status = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]


def _utc(value: datetime) -> datetime:
    """Naive times are UTC; times PostgreSQL cannot hold are refused here, not there."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None


Timestamp = Annotated[datetime, AfterValidator(_utc)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRun(_Request):
    """Body of ``POST /flows/{flow}/runs``."""

    input: Any = Field(None, description="the run's input (the trigger payload, alias `input`)")
    correlation_key: Key | None = Field(None, description="e.g. the PagerDuty incident id")


class StartedRun(BaseModel):
    run_id: str
    created: bool = Field(description="false when the Idempotency-Key named an existing run")


class SendSignal(_Request):
    """Body of ``POST /signals``: to one run, to an incident's runs, or to start flows."""

    name: Key
    payload: Any = None
    run_id: uuid.UUID | None = None
    correlation_key: Key | None = None
    idempotency_key: Key | None = None


class SentSignal(BaseModel):
    signal_id: int
    duplicate: bool
    started: list[str] = Field(description="runs of flows triggered by this signal")


class RunPage(BaseModel):
    runs: list[RunInfo]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")


class RunEvents(BaseModel):
    run_id: str
    events: list[ev.Event]


class CancelRun(_Request):
    reason: str = Field("cancelled through the API", min_length=1, max_length=4096)


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, for a person")
    detail: Any = Field(None, description="field errors of a request that did not validate")


class _RunQuery(_Request):
    flow: Key | None = None
    status: Status | None = None
    correlation_key: Key | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=_KEY_LENGTH)


_CURSOR: TypeAdapter[tuple[Timestamp, uuid.UUID]] = TypeAdapter(tuple[Timestamp, uuid.UUID])


def _encode_cursor(run: RunInfo) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = _CURSOR.validate_json(raw)
    except (ValueError, TypeError):
        raise Problem(400, "invalid cursor: pass back the next_cursor of a previous page") from None
    return created, str(run_id)


def _run_id(request: web.Request) -> str:
    """The path's run id; not a UUID means no such run."""
    value = request.match_info["run_id"]
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise RunNotFoundError(value) from None


async def _body(request: web.Request, model: type[M]) -> M:
    """The JSON body as ``model``; an empty body is ``{}``."""
    raw = await request.read()
    data = parse_json(raw) if raw.strip() else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(
            422,
            f"the request body does not match {model.__name__}",
            detail=exc.errors(include_url=False, include_input=False, include_context=False),
        ) from None


def _json(model: BaseModel, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        text=model.model_dump_json(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class Api:
    """The handlers, bound to a store and the bearer token."""

    def __init__(self, store: Store, token: str | None) -> None:
        self.store = store
        self._token = token.encode() if token else None

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self.authenticate)
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_post(f"{API_PREFIX}/flows/{{flow}}/runs", self.start_run)
        app.router.add_post(f"{API_PREFIX}/signals", self.send_signal)
        app.router.add_get(f"{API_PREFIX}/runs", self.list_runs)
        app.router.add_get(f"{API_PREFIX}/runs/{{run_id}}", self.get_run)
        app.router.add_get(f"{API_PREFIX}/runs/{{run_id}}/events", self.events)
        app.router.add_post(f"{API_PREFIX}/runs/{{run_id}}/cancel", self.cancel)
        app.router.add_post(f"{API_PREFIX}/runs/{{run_id}}/retry", self.retry)

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")) or path == OPENAPI_PATH:
            return await handler(request)
        if self._token is None:
            raise Problem(
                503,
                "the API is disabled because no token is configured; set RESOLUTE_API_TOKEN "
                "and call it with 'Authorization: Bearer <token>'",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        offered = given.strip().encode("utf-8", "replace")
        # compare_digest even for a wrong scheme: the timing says nothing about the token.
        valid = hmac.compare_digest(offered, self._token)
        if scheme.lower() != "bearer" or not valid:
            raise Problem(
                401,
                "missing or wrong API token: send 'Authorization: Bearer <RESOLUTE_API_TOKEN>'",
                headers={"WWW-Authenticate": 'Bearer realm="resolute"'},
            )
        return await handler(request)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def start_run(self, request: web.Request) -> web.Response:
        body = await _body(request, StartRun)
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and len(key) > _KEY_LENGTH:
            raise Problem(400, f"Idempotency-Key is longer than {_KEY_LENGTH} characters")
        run_id, created = await self.store.start_run(
            request.match_info["flow"],
            body.input,
            idempotency_key=key,
            correlation_key=body.correlation_key,
        )
        started = StartedRun(run_id=run_id, created=created)
        return _json(started, 201 if created else 200, Location=f"{API_PREFIX}/runs/{run_id}")

    async def send_signal(self, request: web.Request) -> web.Response:
        body = await _body(request, SendSignal)
        result = await self.store.send_signal(
            body.name,
            body.payload,
            run_id=None if body.run_id is None else str(body.run_id),
            correlation_key=body.correlation_key,
            idempotency_key=body.idempotency_key,
            sent_by="api",
        )
        sent = SentSignal(
            signal_id=result.signal_id, duplicate=result.duplicate, started=result.started
        )
        return _json(sent, 200 if result.duplicate else 201)

    async def list_runs(self, request: web.Request) -> web.Response:
        try:
            query = _RunQuery.model_validate(dict(request.query))
        except ValidationError as exc:
            raise Problem(
                400,
                "invalid query parameters",
                detail=exc.errors(include_url=False, include_input=False, include_context=False),
            ) from None
        runs = await self.store.list_runs(
            flow=query.flow,
            status=query.status,
            correlation_key=query.correlation_key,
            since=query.since,
            until=query.until,
            after=None if query.cursor is None else _decode_cursor(query.cursor),
            limit=query.limit,
        )
        more = len(runs) == query.limit
        return _json(RunPage(runs=runs, next_cursor=_encode_cursor(runs[-1]) if more else None))

    async def get_run(self, request: web.Request) -> web.Response:
        return _json(await self.store.get_run(_run_id(request)))

    async def events(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        await self.store.get_run(run_id)
        return _json(RunEvents(run_id=run_id, events=await self.store.events(run_id)))

    async def cancel(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        body = await _body(request, CancelRun)
        if not await self.store.cancel(run_id, body.reason, by="api"):
            run = await self.store.get_run(run_id)
            raise Problem(409, f"run {run_id} already ended ({run.status}); nothing to cancel")
        return _json(await self.store.get_run(run_id))

    async def retry(self, request: web.Request) -> web.Response:
        run_id = _run_id(request)
        if not await self.store.retry(run_id, by="api"):
            run = await self.store.get_run(run_id)
            raise Problem(409, f"run {run_id} is {run.status}; only failed runs can be retried")
        return _json(await self.store.get_run(run_id))


# --- the OpenAPI document ------------------------------------------------------------

_ERRORS = {
    400: "bad JSON, query parameter or value",
    401: "missing or wrong bearer token",
    404: "no such flow or run",
    409: "the run is not in a state that allows this",
    413: "request body too large",
    422: "the body does not match the schema",
    503: "database unavailable or no API token configured; retry later",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[int, tuple[str, type[BaseModel]]],
    errors: tuple[int, ...],
    *,
    body: type[BaseModel] | None = None,
    body_required: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {"description": text, "content": _content(model)}
        for status, (text, model) in ok.items()
    }
    for status in (401, 503, *errors):
        responses[str(status)] = {"description": _ERRORS[status], "content": _content(ErrorBody)}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters or [],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": _content(body)}
    return op


def _param(name: str, where: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": text,
    }


_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": _KEY_LENGTH}
_TIME_SCHEMA = {"type": "string", "format": "date-time"}
_RUN_ID = _param("run_id", "path", {"type": "string", "format": "uuid"}, "the run's id")


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for ``/api/v1``; component schemas generated from the pydantic models."""
    _, schemas = models_json_schema(
        [
            (StartRun, "validation"),
            (SendSignal, "validation"),
            (CancelRun, "validation"),
            (StartedRun, "serialization"),
            (SentSignal, "serialization"),
            (RunInfo, "serialization"),
            (RunPage, "serialization"),
            (RunEvents, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    run = ("the run", RunInfo)
    paths = {
        f"{API_PREFIX}/flows/{{flow}}/runs": {
            "post": _operation(
                "startRun",
                "Start a run of a flow (manual trigger)",
                {
                    201: ("a new run", StartedRun),
                    200: ("the run of this Idempotency-Key", StartedRun),
                },
                (404, 413, 422, 400),
                body=StartRun,
                parameters=[
                    _param("flow", "path", {"type": "string"}, "the flow's name"),
                    _param(
                        "Idempotency-Key",
                        "header",
                        _KEY_SCHEMA,
                        "a repeated key returns the first run instead of starting another",
                    ),
                ],
            )
        },
        f"{API_PREFIX}/signals": {
            "post": _operation(
                "sendSignal",
                "Send a signal to a run, to an incident's runs, or to start signal-triggered flows",
                {201: ("kept for its run(s)", SentSignal), 200: ("a duplicate", SentSignal)},
                (404, 413, 422, 400),
                body=SendSignal,
                body_required=True,
            )
        },
        f"{API_PREFIX}/runs": {
            "get": _operation(
                "listRuns",
                "Runs, newest first, one page at a time",
                {200: ("a page of runs", RunPage)},
                (400,),
                parameters=[
                    _param("flow", "query", _KEY_SCHEMA, "only runs of this flow"),
                    _param("status", "query", {"enum": list(_STATUSES)}, "only this status"),
                    _param("correlation_key", "query", _KEY_SCHEMA, "only this incident"),
                    _param(
                        "since",
                        "query",
                        {"type": "string", "format": "date-time"},
                        "created at or after",
                    ),
                    _param(
                        "until",
                        "query",
                        {"type": "string", "format": "date-time"},
                        "created before",
                    ),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "page size",
                    ),
                    _param(
                        "cursor", "query", {"type": "string"}, "next_cursor of the previous page"
                    ),
                ],
            )
        },
        f"{API_PREFIX}/runs/{{run_id}}": {
            "get": _operation("getRun", "One run", {200: run}, (404,), parameters=[_RUN_ID])
        },
        f"{API_PREFIX}/runs/{{run_id}}/events": {
            "get": _operation(
                "getRunEvents",
                "A run's event log, in order",
                {200: ("the events", RunEvents)},
                (404,),
                parameters=[_RUN_ID],
            )
        },
        f"{API_PREFIX}/runs/{{run_id}}/cancel": {
            "post": _operation(
                "cancelRun",
                "Cancel a run that has not ended",
                {200: ("the cancelled run", RunInfo)},
                (404, 409, 413, 422, 400),
                body=CancelRun,
                parameters=[_RUN_ID],
            )
        },
        f"{API_PREFIX}/runs/{{run_id}}/retry": {
            "post": _operation(
                "retryRun",
                "Send a failed run back to work from its failed step",
                {200: ("the run, running again", RunInfo)},
                (404, 409),
                parameters=[_RUN_ID],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Resolute API",
            "version": "1",
            "description": "Start, signal, inspect, cancel and retry Resolute runs.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
