"""Webhook routes over real HTTP on loopback and real PostgreSQL: PagerDuty's payloads
and signature vectors, duplicates under concurrency, delivery to an active run, and
every kind of bad input answered in JSON with nothing half-written."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator import ConfigurationError, Flow, Worker, WorkerConfig, webhook
from orchestrator.database import create_engine
from orchestrator.store import Store
from orchestrator.verify import HmacSignature, no_verification, pagerduty_v3
from orchestrator.webhooks import WebhookRoute, delivery_id, event_type, webhook_routes
from tests import service_flows as sf
from tests.service_harness import AUTH, ROOT, Service, pd_event, running_service, sign
from tests.workers import wait_until


def _contracts() -> dict[str, Any]:
    base = Path(os.environ.get("RESOLUTE_CONTRACTS_DIR", ROOT.parent / "shared" / "contracts"))
    path = base / "pagerduty" / "pagerduty-webhook-v3-examples.json"
    if not path.exists():
        pytest.skip(f"PagerDuty contracts not found at {path} (set RESOLUTE_CONTRACTS_DIR)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
async def svc(database_url: str) -> AsyncIterator[Service]:
    async with running_service(database_url, max_body_bytes=64 * 1024) as s:
        yield s


async def _json(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


# --- PagerDuty contracts ----------------------------------------------------------------


@pytest.mark.contracts
async def test_pagerduty_signature_vectors(database_url: str, pg: asyncpg.Connection) -> None:
    """Each published vector on a route holding the vector's secret: valid ones start a
    run with the exact payload; the others are 401, recorded without their body."""
    vectors = _contracts()["signature_test_vectors"]
    official = vectors["official_go_pagerduty"]
    cases = [
        ("official-valid", official["secret"], official["body"], official["valid_header"], True),
        (
            "official-mismatch",
            official["secret"],
            official["body"],
            official["mismatched_header"],
            False,
        ),
    ] + [
        (
            v["name"],
            v.get("secret") or v["secret_held_by_receiver"],
            v["body"],
            v["header"],
            v["expect_valid"],
        )
        for v in vectors["derived_here"]["vectors"]
    ]
    assert any(name.startswith("rotation") for name, *_ in cases)
    flows = [
        Flow(f"v-{name}")
        .triggered_by(webhook(f"/v/{name}", verify=pagerduty_v3([secret])))
        .then(sf.echo.as_("echo"))
        for name, secret, *_ in cases
    ]
    worker = Worker(WorkerConfig(task_queue="vectors", auto_migrate=False)).with_flow(*flows)
    async with running_service(database_url, worker=worker) as svc:
        client, store = svc.client, svc.store
        for name, _, body, header, valid in cases:
            headers = {"Content-Type": "application/json"}
            if header is not None:
                headers["X-PagerDuty-Signature"] = header
            resp = await client.post(f"/v/{name}", data=body.encode(), headers=headers)
            answer = await _json(resp, 202 if valid else 401)
            row = await pg.fetchrow(
                "SELECT verification, body, headers, run_ids FROM webhook_deliveries "
                "WHERE route = $1",
                f"/v/{name}",
            )
            if valid:
                assert row["verification"] == "verified" and len(answer["run_ids"]) == 1, name
                run = await store.get_run(answer["run_ids"][0])
                assert run.input == json.loads(body) and run.flow == f"v-{name}"
                assert json.loads(row["headers"])["X-PagerDuty-Signature"] == "[redacted]"
            else:
                assert "signature does not verify" in answer["error"], name
                assert row["verification"] == "failed" and row["body"] is None, name
                assert row["run_ids"] == [], name
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == sum(c[4] for c in cases)


@pytest.mark.contracts
async def test_real_pagerduty_payloads(svc: Service, pg: asyncpg.Connection) -> None:
    """Every captured/documented payload, signed with the old and the new secret (rotation):
    accepted, deduplicated by event id, correlated by incident id."""
    payloads = _contracts()["payloads"]
    for name, entry in payloads.items():
        body = json.dumps(entry["body"]).encode()
        resp = await svc.webhook(body, secrets=(sf.OLD_SECRET, "rotated-away"))
        answer = await _json(resp, 202)
        assert answer["delivery"] == entry["body"]["event"]["id"] and not answer["duplicate"]
        again = await _json(await svc.webhook(body, secrets=(sf.SECRET,)), 202)
        assert again["duplicate"] and again["run_ids"] == answer["run_ids"], name
        runs = [await svc.store.get_run(r) for r in answer["run_ids"]]
        assert {r.flow for r in runs} == {"pd-incident", "pd-audit"}
        assert all(
            r.correlation_key == sf.incident_id(entry["body"])
            for r in runs
            if r.flow == "pd-incident"
        )
    assert await pg.fetchval("SELECT count(*) FROM webhook_deliveries") == len(payloads)
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == 2 * len(payloads)
    resolved = await pg.fetchval(
        "SELECT correlation_key FROM webhook_deliveries WHERE delivery_id = $1",
        payloads["incident.annotated"]["body"]["event"]["id"],
    )
    assert resolved == payloads["incident.annotated"]["body"]["event"]["data"]["incident"]["id"]


# --- delivery semantics -------------------------------------------------------------------


async def test_concurrent_deliveries_with_duplicates(svc: Service, pg: asyncpg.Connection) -> None:
    """200 deliveries at once, 80 of them repeats: one run per distinct delivery."""
    ids = [f"d-{i % 120}" for i in range(200)]

    async def send(i: str) -> dict[str, Any]:
        resp = await svc.webhook({"n": i}, route=sf.OPEN_ROUTE, webhook_id=i, secrets=())
        return await _json(resp, 202)  # type: ignore[no-any-return]

    answers = await asyncio.gather(*(send(i) for i in ids))
    firsts = Counter(a["delivery"] for a in answers if not a["duplicate"])
    assert set(firsts) == set(ids) and set(firsts.values()) == {1}
    by_id: dict[str, set[str]] = {}
    for a in answers:
        by_id.setdefault(a["delivery"], set()).update(a["run_ids"])
    assert all(len(runs) == 1 for runs in by_id.values())
    rows = await pg.fetch("SELECT idempotency_key, input FROM flow_runs")
    assert len(rows) == 120
    assert {r["idempotency_key"] for r in rows} == {
        f"webhook:{sf.OPEN_ROUTE}:{i}" for i in set(ids)
    }
    assert await pg.fetchval("SELECT count(*) FROM webhook_deliveries") == 120
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM webhook_deliveries d "
            "JOIN flow_runs r ON r.run_id = ANY(d.run_ids)"
        )
        == 120
    )


async def test_ack_webhook_reaches_the_waiting_run(
    database_url: str, pg: asyncpg.Connection
) -> None:
    """incident.triggered starts the incident's run, which waits; incident.acknowledged for
    the same incident is delivered to it as a signal (and still starts pd-audit)."""
    worker = sf.worker()
    worker.config = replace(worker.config, database_url=database_url)
    await worker.start()
    try:
        async with running_service(database_url) as svc:
            first = await _json(await svc.webhook(pd_event("incident.triggered", "PXYZ")), 202)
            [incident_run] = [
                r for r in first["run_ids"] if (await svc.store.get_run(r)).flow == "pd-incident"
            ]
            await wait_until(
                pg,
                "SELECT count(*) > 0 FROM run_events WHERE run_id = $1 AND type = 'signal.waiting'",
                incident_run,
            )
            ack = pd_event("incident.acknowledged", "PXYZ")
            ack["event"]["agent"] = {"summary": "alice"}
            second = await _json(await svc.webhook(ack), 202)
            assert len(second["signal_ids"]) == 1 and len(second["run_ids"]) == 1
            assert (await svc.store.get_run(second["run_ids"][0])).flow == "pd-audit"
            await wait_until(
                pg, "SELECT status = 'completed' FROM flow_runs WHERE run_id = $1", incident_run
            )
            run = await svc.store.get_run(incident_run)
            assert run.result == {"received": True, "payload": ack}
            # The next incident is a new run, not a signal to PXYZ's.
            other = await _json(await svc.webhook(pd_event("incident.triggered", "PABC")), 202)
            assert len(other["run_ids"]) == 2 and other["signal_ids"] == []
    finally:
        await worker.stop()


# --- bad input --------------------------------------------------------------------------


async def _nothing_stored(pg: asyncpg.Connection) -> None:
    assert await pg.fetchval("SELECT count(*) FROM flow_runs") == 0
    assert (
        await pg.fetchval("SELECT count(*) FROM webhook_deliveries WHERE verification <> 'failed'")
        == 0
    )


async def test_bad_signatures_are_401_and_recorded_without_body(
    svc: Service, pg: asyncpg.Connection
) -> None:
    body = json.dumps(pd_event("incident.triggered", "P1")).encode()
    missing = await _json(await svc.webhook(body, secrets=()), 401)
    wrong = await _json(await svc.webhook(body, secrets=("guess",), webhook_id="w-1"), 401)
    assert "X-PagerDuty-Signature" in missing["error"] and "signing secret" in wrong["error"]
    rows = await pg.fetch("SELECT delivery_id, verification, body, error FROM webhook_deliveries")
    assert {r["verification"] for r in rows} == {"failed"} and len(rows) == 2
    assert all(r["body"] is None and r["error"] for r in rows)
    assert "w-1" in {r["delivery_id"] for r in rows}
    await _nothing_stored(pg)
    # A forged delivery cannot squat on a real delivery's id.
    assert not (await _json(await svc.webhook(body, webhook_id="w-1"), 202))["duplicate"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"x": NaN}', "not valid JSON"),
        (b'{"x": 1e999}', "out of range"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"x": "nul \\u0000 inside"}', "cannot store"),
    ],
)
async def test_malformed_bodies_are_400(
    svc: Service, pg: asyncpg.Connection, body: bytes, message: str
) -> None:
    resp = await svc.webhook(body, route=sf.OPEN_ROUTE, secrets=())
    answer = await _json(resp, 400)
    assert message in answer["error"]
    await _nothing_stored(pg)


async def test_a_payload_the_trigger_cannot_read_is_400(
    svc: Service, pg: asyncpg.Connection
) -> None:
    resp = await svc.webhook({"event": {"data": "not a dict"}})
    assert "could not read this payload" in (await _json(resp, 400))["error"]
    await _nothing_stored(pg)


async def test_oversized_body_is_413_without_reading_it(
    svc: Service, pg: asyncpg.Connection
) -> None:
    resp = await svc.webhook(b'{"x": "' + b"a" * 70_000 + b'"}', route=sf.OPEN_ROUTE, secrets=())
    assert "65536 bytes" in (await _json(resp, 413))["error"]

    async def endless() -> AsyncIterator[bytes]:  # chunked, no Content-Length
        for _ in range(10_000):
            yield b"x" * 8192

    resp = await svc.client.post(sf.OPEN_ROUTE, data=endless())
    await _json(resp, 413)
    # A declared length over the limit is refused before a byte of the body is sent.
    host, port = svc.client.host, svc.client.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {sf.OPEN_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert b" 413 " in status
    writer.close()
    await _nothing_stored(pg)


async def test_unknown_route_and_wrong_method(svc: Service) -> None:
    answer = await _json(await svc.client.post("/hooks/nope", data=b"{}"), 404)
    assert "/hooks/nope" in answer["error"]
    resp = await svc.client.get(sf.PD_ROUTE)
    answer = await _json(resp, 405)
    assert "POST" in answer["error"] and resp.headers["Allow"] == "POST"


async def test_database_down_is_503_with_retry_after(database_url: str) -> None:
    down = Store(create_engine("postgresql://postgres@127.0.0.1:1/none"))
    async with running_service(database_url, store=down) as svc:
        resp = await svc.webhook(pd_event("incident.triggered", "P1"))
        answer = await _json(resp, 503)
        assert resp.headers["Retry-After"] == "5" and "database is unavailable" in answer["error"]
        api = await svc.client.get("/api/v1/runs", headers=AUTH)
        assert api.status == 503 and api.headers["Retry-After"] == "5"
        assert "nothing was stored" in (await api.json())["error"]
        # A forged delivery is still told it is forged, database or not.
        await _json(await svc.webhook(pd_event("incident.triggered", "P1"), secrets=("x",)), 401)


# --- the route table and extraction, without a server -------------------------------------


def _flow(name: str, path: str, **kw: Any) -> Any:
    return Flow(name).triggered_by(webhook(path, **kw)).then(sf.echo.as_("echo")).build()


def test_a_route_without_verification_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"verify=no_verification\(\)"):
        webhook_routes({"f": _flow("f", "/h")})
    with pytest.raises(ConfigurationError, match="not a verifier"):
        webhook_routes({"f": _flow("f", "/h", verify="secret")})


@pytest.mark.parametrize("path", ["/api/v1/x", "/health/live", "/metrics", "/h/{id}"])
def test_reserved_or_templated_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="not allowed"):
        webhook_routes({"f": _flow("f", path, verify=no_verification())})


def test_flows_sharing_a_route() -> None:
    pd = pagerduty_v3(["s"])
    other = HmacSignature(header="X-Other", secrets=["t"])

    def action(payload: dict[str, Any]) -> str:
        return str(payload["action"])

    routes = webhook_routes(
        {
            "a": _flow(
                "a",
                "/h",
                verify=pd,
                correlate=sf.incident_id,
                deliver_to_active=True,
                signal_name=action,
            ),
            "b": _flow("b", "/h", verify=other),
            "c": _flow("c", "/open", verify=no_verification()),
        }
    )
    assert [r.path for r in routes] == ["/h", "/open"]
    shared, open_route = routes
    assert shared.flows == (("a", True), ("b", False)) and shared.correlate is sf.incident_id
    assert shared.signal_name is action
    assert shared.verifiers == (pd, other) and shared.verification == "verified"
    assert open_route.verification == "none"
    with pytest.raises(ConfigurationError, match="different correlate= functions"):
        webhook_routes(
            {
                "a": _flow("a", "/h", verify=pd, correlate=sf.incident_id),
                "b": _flow("b", "/h", verify=pd, correlate=lambda p: "x"),
            }
        )


def test_delivery_id_and_event_type() -> None:
    route = WebhookRoute("/h", (no_verification(),), (("f", False),))
    event = pd_event("incident.triggered", "P1", event_id="E1")
    assert delivery_id(route, event, {"X-Webhook-Id": "W1"}, b"") == "W1"
    assert delivery_id(route, event, {}, b"") == "E1"
    assert delivery_id(route, {}, {}, b"{}").startswith("sha256:44136fa355b3678a")
    custom = WebhookRoute("/h", (no_verification(),), (("f", False),), dedup=lambda p, h: p["k"])
    assert delivery_id(custom, {"k": 7}, {"X-Webhook-Id": "W1"}, b"") == "7"
    assert event_type(event) == "incident.triggered"
    assert event_type({"type": "push"}) == "push" and event_type({"x": 1}) is None


def test_signing_helper_matches_the_verifier() -> None:
    assert pagerduty_v3([sf.SECRET]).verify(b"{}", {"X-PagerDuty-Signature": sign(b"{}")})
