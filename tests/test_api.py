"""The JSON API over real HTTP: auth, manual starts, signals, paging, cancel, retry, the
OpenAPI document, and schemathesis driving every operation against a live server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate

from orchestrator.api import openapi_document
from tests import service_flows as sf
from tests.service_harness import AUTH, TOKEN, Service, running_service
from tests.workers import wait_until

API = "/api/v1"


@pytest.fixture
async def svc(database_url: str) -> AsyncIterator[Service]:
    async with running_service(database_url) as s:
        yield s


async def _call(
    svc: Service, method: str, path: str, status: int, *, auth: bool = True, **kw: Any
) -> Any:
    headers = {**(AUTH if auth else {}), **kw.pop("headers", {})}
    resp = await svc.client.request(method, API + path, headers=headers, **kw)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_auth(database_url: str, svc: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = await svc.client.get(f"{API}/runs", headers=headers)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "RESOLUTE_API_TOKEN" in (await resp.json())["error"]
    await _call(svc, "GET", "/runs", 200)
    await _call(svc, "GET", "/no-such-thing", 401, auth=False)  # no probing without a token
    await _call(svc, "GET", "/openapi.json", 200, auth=False)  # the document is public
    async with running_service(database_url, api_token=None) as closed:
        body = await _call(closed, "GET", "/runs", 503)
        assert "no token is configured" in body["error"]
        # Webhooks do not need the API token.
        await closed.webhook({"x": 1}, route=sf.OPEN_ROUTE, secrets=())


async def test_manual_start_is_idempotent(svc: Service) -> None:
    key = {"Idempotency-Key": "ticket-42"}
    body = {"input": {"id": 42}, "correlation_key": "P42"}
    first = await _call(svc, "POST", "/flows/manual-echo/runs", 201, json=body, headers=key)
    again = await _call(svc, "POST", "/flows/manual-echo/runs", 200, json=body, headers=key)
    assert first == {"run_id": again["run_id"], "created": True} and not again["created"]
    run = await _call(svc, "GET", f"/runs/{first['run_id']}", 200)
    assert run["input"] == {"id": 42} and run["correlation_key"] == "P42"
    assert run["idempotency_key"] == "ticket-42" and run["status"] == "pending"
    events = await _call(svc, "GET", f"/runs/{first['run_id']}/events", 200)
    assert [e["type"] for e in events["events"]] == ["run.started"]
    plain = await _call(svc, "POST", "/flows/manual-echo/runs", 201)  # no body: input null
    assert plain["run_id"] != first["run_id"]


async def test_bad_requests(svc: Service) -> None:
    assert "unknown flow" in (await _call(svc, "POST", "/flows/nope/runs", 404, json={}))["error"]
    body = await _call(svc, "POST", "/flows/manual-echo/runs", 422, json={"inptu": 1})
    assert body["detail"][0]["loc"] == ["inptu"] and "StartRun" in body["error"]
    await _call(svc, "POST", "/flows/manual-echo/runs", 400, data=b"{oops")
    body = await _call(svc, "POST", "/signals", 422, json={"payload": 1})
    assert body["detail"][0]["loc"] == ["name"]
    await _call(svc, "POST", "/signals", 422, json={"name": "x", "run_id": "not-a-uuid"})
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        assert "not found" in (await _call(svc, "GET", f"/runs/{bad}", 404))["error"]
        await _call(svc, "GET", f"/runs/{bad}/events", 404)
        await _call(svc, "POST", f"/runs/{bad}/cancel", 404)
        await _call(svc, "POST", f"/runs/{bad}/retry", 404)
    await _call(svc, "POST", "/flows/manual-echo/runs", 400, json={"input": "a\u0000b"})
    await _call(svc, "DELETE", "/runs", 405)
    huge = {"input": "x" * (2 * 1024 * 1024)}
    assert "bytes" in (await _call(svc, "POST", "/flows/manual-echo/runs", 413, json=huge))["error"]


async def test_signals(svc: Service) -> None:
    run_id = (await _call(svc, "POST", "/flows/manual-echo/runs", 201))["run_id"]
    sent = {"name": "go", "payload": {"n": 1}, "run_id": run_id, "idempotency_key": "go-1"}
    first = await _call(svc, "POST", "/signals", 201, json=sent)
    again = await _call(svc, "POST", "/signals", 200, json=sent)
    assert again == {**first, "duplicate": True}
    missing = {"name": "go", "run_id": str(uuid.uuid4())}
    await _call(svc, "POST", "/signals", 404, json=missing)
    resolved = {"name": "incident.resolved", "payload": {"id": "P1"}, "correlation_key": "P1"}
    started = (await _call(svc, "POST", "/signals", 201, json=resolved))["started"]
    assert len(started) == 1
    run = await _call(svc, "GET", f"/runs/{started[0]}", 200)
    assert run["flow"] == "on-resolved" and run["correlation_key"] == "P1"


async def test_paging_and_filters(svc: Service, pg: asyncpg.Connection) -> None:
    ids = [
        (await _call(svc, "POST", "/flows/manual-echo/runs", 201, json={"correlation_key": k}))[
            "run_id"
        ]
        for k in ["A", "B", "A", "B", "A", "B", "A"]
    ]
    await _call(svc, "POST", "/flows/flaky/runs", 201)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"flow": "manual-echo", "limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = await _call(svc, "GET", "/runs", 200, params=params)
        seen += [r["run_id"] for r in page["runs"]]
        assert len(page["runs"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, every run once
    only_a = await _call(svc, "GET", "/runs", 200, params={"correlation_key": "A"})
    assert {r["run_id"] for r in only_a["runs"]} == set(ids[0::2])
    pending = await _call(svc, "GET", "/runs", 200, params={"status": "pending"})
    assert len(pending["runs"]) == 8 and pending["next_cursor"] is None
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await _call(svc, "GET", "/runs", 200, params={"since": future}))["runs"] == []
    assert len((await _call(svc, "GET", "/runs", 200, params={"until": future}))["runs"]) == 8
    for bad in ({"limit": "0"}, {"limit": "x"}, {"status": "lost"}, {"since": "yesterday"}):
        body = await _call(svc, "GET", "/runs", 400, params=bad)
        assert body["detail"], bad
    assert "cursor" in (await _call(svc, "GET", "/runs", 400, params={"cursor": "zz"}))["error"]


async def test_cancel_and_retry(database_url: str, svc: Service, pg: asyncpg.Connection) -> None:
    pending = (await _call(svc, "POST", "/flows/manual-echo/runs", 201))["run_id"]
    cancelled = await _call(svc, "POST", f"/runs/{pending}/cancel", 200, json={"reason": "dup"})
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "dup"
    assert "already ended" in (await _call(svc, "POST", f"/runs/{pending}/cancel", 409))["error"]
    assert "only failed" in (await _call(svc, "POST", f"/runs/{pending}/retry", 409))["error"]
    worker = sf.worker()
    worker.config = replace(worker.config, database_url=database_url)
    sf.FIXED["flaky"] = False
    await worker.start()
    try:
        flaky = (await _call(svc, "POST", "/flows/flaky/runs", 201))["run_id"]
        await wait_until(pg, "SELECT status = 'failed' FROM flow_runs WHERE run_id = $1", flaky)
        sf.FIXED["flaky"] = True
        retried = await _call(svc, "POST", f"/runs/{flaky}/retry", 200)
        assert retried["status"] == "running" and retried["error"] is None
        await wait_until(pg, "SELECT status = 'completed' FROM flow_runs WHERE run_id = $1", flaky)
    finally:
        await worker.stop()
    events = (await _call(svc, "GET", f"/runs/{flaky}/events", 200))["events"]
    assert [e["type"] for e in events].count("run.resumed") == 1
    assert events[-1]["type"] == "run.completed" and events[-1]["result"] == "ok"
    await _call(svc, "POST", f"/runs/{flaky}/retry", 409)


def test_openapi_document_is_valid_and_complete() -> None:
    doc = openapi_document()
    validate(doc)
    operations = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert operations == {
        ("POST", f"{API}/flows/{{flow}}/runs"),
        ("POST", f"{API}/signals"),
        ("GET", f"{API}/runs"),
        ("GET", f"{API}/runs/{{run_id}}"),
        ("GET", f"{API}/runs/{{run_id}}/events"),
        ("POST", f"{API}/runs/{{run_id}}/cancel"),
        ("POST", f"{API}/runs/{{run_id}}/retry"),
    }
    schemas = doc["components"]["schemas"]
    assert {"StartRun", "SendSignal", "RunInfo", "RunPage", "RunEvents", "ErrorBody"} <= set(
        schemas
    )


async def test_schemathesis_finds_no_server_errors(svc: Service) -> None:
    """Every operation, positive and negative examples, against the live server."""
    await _call(svc, "POST", "/flows/manual-echo/runs", 201)  # something to list
    base_url = str(svc.client.make_url("/")).rstrip("/")
    schema = schemathesis.openapi.from_dict(openapi_document())
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7

    def fuzz() -> int:
        calls = 0
        for operation in operations:
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):

                @hypothesis.settings(
                    max_examples=30,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(hypothesis.HealthCheck),
                    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                )
                @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
                def example(case: schemathesis.Case) -> None:
                    nonlocal calls
                    calls += 1
                    case.call_and_validate(base_url=base_url, headers=AUTH, checks=checks)

                example()
        return calls

    calls = await asyncio.to_thread(fuzz)  # the server keeps serving on this loop
    assert calls > 100
