"""The service under test: in-process on a loopback port, or as a real ``resolute``
process (``serve``/``api``) for kill and shutdown tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Worker
from orchestrator.database import create_engine
from orchestrator.server import create_app
from orchestrator.service import prepare_database
from orchestrator.settings import Settings
from orchestrator.store import Store
from tests import service_flows

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sign(body: bytes, *secrets: str) -> str:
    return ",".join(
        "v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest()
        for s in secrets or (service_flows.SECRET,)
    )


@dataclass
class Service:
    client: TestClient[Any, Any]
    store: Store

    async def webhook(
        self,
        payload: Any,
        *,
        route: str = service_flows.PD_ROUTE,
        webhook_id: str | None = None,
        secrets: tuple[str, ...] = (service_flows.SECRET,),
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        """POST a delivery, signed like PagerDuty does (raw bytes, ``v1=`` HMAC)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json"}
        if secrets:
            sent["X-PagerDuty-Signature"] = sign(body, *secrets)
        if webhook_id is not None:
            sent["X-Webhook-Id"] = webhook_id
        sent.update(headers or {})
        return await self.client.post(route, data=body, headers=sent)


@asynccontextmanager
async def running_service(
    database_url: str,
    *,
    store: Store | None = None,
    worker: Worker | None = None,
    **settings: Any,
) -> AsyncIterator[Service]:
    """The app over ``database_url`` (or over ``store``), on 127.0.0.1, flows registered."""
    worker = worker or service_flows.worker()
    own = store is None
    store = store or Store(create_engine(database_url, pool_size=10))
    if own:
        await prepare_database(worker, store, database_url)
    app = create_app(
        store, worker.flows, Settings(_env_file=None, **({"api_token": TOKEN} | settings))
    )
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield Service(client, store)
    finally:
        await store.engine.dispose()


def pd_event(event_type: str, incident: str, event_id: str | None = None) -> dict[str, Any]:
    """A PagerDuty v3 webhook body of the captured shape, for a given incident."""
    return {
        "event": {
            "id": event_id or f"{event_type}-{incident}",
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2021-06-04T13:35:29.781Z",
            "data": {"id": incident, "type": "incident", "title": f"incident {incident}"},
        }
    }


class ServiceProcess:
    """``python -m orchestrator serve|api tests.service_flows:worker`` on a free port."""

    def __init__(self, command: str, database_url: str, name: str, **env: str) -> None:
        logs = ROOT / ".pytest_cache" / "service"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        full_env = dict(os.environ)
        full_env.update(
            RESOLUTE_DATABASE_URL=database_url,
            RESOLUTE_PORT="0",
            RESOLUTE_API_TOKEN=TOKEN,
            RESOLUTE_LOG_LEVEL="INFO",
            RESOLUTE_WORKER_ID=name,
            **env,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", command, "tests.service_flows:worker"],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"serving on (http://[\d.]+:\d+)", self.log_path.read_bytes())
            if found:
                return found.group(1).decode()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"the service did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()
