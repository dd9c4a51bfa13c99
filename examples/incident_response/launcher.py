"""What the demo (and its tests) run around the flows: the vendor sandbox and the sample
service in this process, and ``resolute serve examples.incident_response.service:worker``
as a real subprocess pointed at them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from providers.sandbox import Sandbox, start_sandbox

from .sample_service import SampleService, start_sample_service

__all__ = ["TARGET", "ResoluteService", "ServiceFailedError", "Stack", "free_port", "running_stack"]

TARGET = "examples.incident_response.service:worker"
ROOT = Path(__file__).resolve().parents[2]


class ServiceFailedError(RuntimeError):
    """The service process did not come up (its log is in the message)."""


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else any free loopback port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


class ResoluteService:
    """``resolute serve`` in a subprocess, logging to ``log_path``; restartable under the
    same worker id, so a restart after SIGKILL takes its runs back at once."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env = {**os.environ, **env, "RESOLUTE_PORT": str(port)}
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "serve", TARGET],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 60) -> None:
        """Start it and wait for ``/health/ready`` (database reachable and migrated)."""
        self.proc = proc = self._spawn()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    async with http.get(f"{self.url}/health/ready") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        self.kill()
        raise ServiceFailedError(f"the service did not become ready; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of its log, without the scheduler's routine lines."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        kept = [line for line in text.splitlines() if "apscheduler" not in line]
        return "\n".join(kept[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no hand-back; what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self, grace: float = 20) -> int | None:
        """SIGTERM (graceful: in-flight steps finish, runs are handed back), then SIGKILL."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return proc.returncode


@dataclass
class Stack:
    sandbox: Sandbox
    sample: SampleService
    service: ResoluteService
    database_url: str
    api_token: str
    webhook_secret: str
    escalate_after: float

    @property
    def webhook_url(self) -> str:
        return f"{self.service.url}/pagerduty/incident"


def service_env(
    sandbox: Sandbox, sample: SampleService, database_url: str, escalate_after: float
) -> tuple[dict[str, str], str, str]:
    """(environment, API token, webhook secret) for the service process."""
    token, secret = secrets.token_hex(16), secrets.token_hex(16)
    policy = next(iter(sandbox.state()["pagerduty"]["escalation_policies"]))
    env = sandbox.env()
    env.update(
        PAGERDUTY_WEBHOOK_SECRETS=secret,
        # The sandbox knows one PagerDuty service; management is paged through it too.
        ESCALATION_ROUTING_KEY=env["PAGERDUTY_ROUTING_KEY"],
        ESCALATION_POLICY=policy,
        ESCALATION_AFTER_SECONDS=f"{escalate_after:g}",
        CHECKOUT_API_URL=sample.url,
        RESOLUTE_DATABASE_URL=database_url,
        RESOLUTE_API_TOKEN=token,
        RESOLUTE_WORKER_ID="incident-demo",
        RESOLUTE_LOG_LEVEL=os.environ.get("RESOLUTE_LOG_LEVEL", "INFO"),
        # Fail fast and retry through the engine rather than wait on a fake.
        RESOLUTE_HTTP_TIMEOUT="5",
    )
    return env, token, secret


@asynccontextmanager
async def running_stack(
    database_url: str,
    *,
    escalate_after: float,
    log_path: Path,
    port: int | None = None,
) -> AsyncIterator[Stack]:
    """Sandbox, sample service and the Resolute service, stopped in reverse on exit."""
    async with AsyncExitStack() as stack:
        sandbox = await start_sandbox()
        stack.push_async_callback(sandbox.close)
        sample = await start_sample_service()
        stack.push_async_callback(sample.close)
        env, token, secret = service_env(sandbox, sample, database_url, escalate_after)
        service = ResoluteService(env, free_port(port), log_path)
        stack.push_async_callback(service.stop)
        await service.start()
        yield Stack(sandbox, sample, service, database_url, token, secret, escalate_after)
