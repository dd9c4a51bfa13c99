"""The service as operators see it: health, metrics, refusing unsafe routes at start,
SIGTERM shutdown, and a server SIGKILLed while deliveries arrive."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import asyncpg
import pytest

from orchestrator.database import asyncpg_dsn, create_engine, with_database
from orchestrator.store import Store
from tests import service_flows as sf
from tests.service_harness import (
    AUTH,
    ROOT,
    Service,
    ServiceProcess,
    pd_event,
    running_service,
    sign,
)
from tests.workers import wait_until


@pytest.fixture
async def svc(database_url: str) -> AsyncIterator[Service]:
    async with running_service(database_url) as s:
        yield s


async def test_health(svc: Service, database_url: str, server_url: str) -> None:
    assert (await (await svc.client.get("/health/live")).json()) == {"status": "live"}
    resp = await svc.client.get("/health/ready")
    assert resp.status == 200 and (await resp.json())["status"] == "ready"
    down = Store(create_engine("postgresql://postgres@127.0.0.1:1/none"))
    async with running_service(database_url, store=down) as dead:
        resp = await dead.client.get("/health/ready")
        assert resp.status == 503 and "unreachable" in (await resp.json())["error"]
        assert (await dead.client.get("/health/live")).status == 200
        metrics = await (await dead.client.get("/metrics")).text()
        assert "resolute_database_up 0.0" in metrics
    # A database nobody migrated: reachable, but not ready.
    name = f"resolute_bare_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        bare_url = with_database(database_url, name)
        async with running_service(database_url, store=Store(create_engine(bare_url))) as bare:
            resp = await bare.client.get("/health/ready")
            assert resp.status == 503 and "resolute db upgrade" in (await resp.json())["error"]
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_metrics(database_url: str, svc: Service, pg: asyncpg.Connection) -> None:
    worker = sf.worker()
    worker.config = replace(worker.config, database_url=database_url)
    await worker.start()
    try:
        resp = await svc.webhook({"hello": 1}, route=sf.OPEN_ROUTE, secrets=())
        [run_id] = (await resp.json())["run_ids"]
        await svc.webhook({"hello": 1}, route=sf.OPEN_ROUTE, secrets=())  # a duplicate
        await svc.webhook(pd_event("incident.triggered", "P1"), secrets=("wrong",))
        await wait_until(pg, "SELECT status = 'completed' FROM flow_runs WHERE run_id = $1", run_id)
    finally:
        await worker.stop()
    await svc.client.post("/api/v1/flows/manual-echo/runs", headers=AUTH)  # stays pending
    resp = await svc.client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    lines = set(text.splitlines())
    assert "resolute_database_up 1.0" in lines
    assert 'resolute_runs{flow="open-hook",status="completed"} 1.0' in lines
    assert 'resolute_runs{flow="manual-echo",status="pending"} 1.0' in lines
    assert 'resolute_runs_started_total{flow="open-hook"} 1.0' in lines
    assert 'resolute_queue_depth{task_queue="service"} 1.0' in lines
    route = f'route="{sf.OPEN_ROUTE}"'
    assert f'resolute_webhook_deliveries_total{{outcome="accepted",{route}}}' in text
    assert f'resolute_webhook_deliveries_total{{outcome="duplicate",{route}}}' in text
    assert 'outcome="unverified",route="/hooks/pagerduty"' in text
    assert (
        'resolute_step_duration_seconds_count{flow="open-hook",outcome="completed",step="echo"}'
        in text
    )
    assert 'resolute_worker_runs_ended_total{flow="open-hook",status="completed"}' in text
    assert "resolute_lease_takeovers_total" in text


def test_a_route_without_verification_stops_the_service_at_start() -> None:
    """Refused before the database is even looked at (this one is unreachable)."""
    env = dict(os.environ, RESOLUTE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "api", "tests.service_flows:unverified_worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "no verification" in message and "verify=no_verification()" in message


async def test_serve_runs_flows_and_stops_cleanly_on_sigterm(
    database_url: str, pg: asyncpg.Connection
) -> None:
    proc = ServiceProcess("serve", database_url, "serve-sigterm")
    try:
        async with aiohttp.ClientSession(proc.url) as http:
            resp = await http.post(sf.OPEN_ROUTE, json={"n": 1})
            assert resp.status == 202
            [run_id] = (await resp.json())["run_ids"]
            await wait_until(
                pg, "SELECT status = 'completed' FROM flow_runs WHERE run_id = $1", run_id
            )
            assert (await http.get("/health/ready")).status == 200
    finally:
        code = await asyncio.to_thread(proc.terminate)
    assert code == 0, proc.log_path.read_text()
    assert "stopped" in proc.log_path.read_text()


async def test_sigkill_during_deliveries_loses_no_acknowledged_delivery(
    database_url: str, pg: asyncpg.Connection
) -> None:
    """Deliveries stream in; the server dies mid-stream. Every 2xx has its runs; the rest
    were never acknowledged (the sender retries those)."""
    proc = ServiceProcess("api", database_url, "api-sigkill")
    acked: dict[str, list[str]] = {}
    failed: set[str] = set()
    enough = asyncio.Event()
    killed = asyncio.Event()

    async def sender(http: aiohttp.ClientSession, lane: int) -> None:
        for n in range(10_000):
            if killed.is_set() and failed:
                return
            delivery = f"k-{lane}-{n}"
            body = json.dumps(pd_event("incident.triggered", f"P-{delivery}")).encode()
            headers = {"X-Webhook-Id": delivery, "X-PagerDuty-Signature": sign(body)}
            try:
                resp = await http.post(sf.PD_ROUTE, data=body, headers=headers)
                if resp.status == 202:
                    acked[delivery] = (await resp.json())["run_ids"]
                    if len(acked) >= 150:
                        enough.set()
                else:
                    failed.add(delivery)
            except aiohttp.ClientError:
                failed.add(delivery)

    async def killer() -> None:
        await enough.wait()
        proc.kill()
        killed.set()

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(proc.url, timeout=timeout) as http:
        await asyncio.wait_for(
            asyncio.gather(killer(), *(sender(http, lane) for lane in range(16))), 60
        )
    assert len(acked) >= 150 and failed
    rows = await pg.fetch(
        "SELECT d.delivery_id, d.run_ids, count(r.run_id) AS runs FROM webhook_deliveries d "
        "LEFT JOIN flow_runs r ON r.run_id = ANY(d.run_ids) GROUP BY d.id"
    )
    stored = {r["delivery_id"]: r for r in rows}
    for delivery, run_ids in acked.items():
        assert delivery in stored, delivery
        assert sorted(map(str, stored[delivery]["run_ids"])) == sorted(run_ids)
        assert stored[delivery]["runs"] == 2
    # Nothing half-written: a stored delivery always has both of its runs.
    assert all(r["runs"] == 2 for r in rows)
    assert not set(acked) & failed
