"""Worker subprocesses for crash tests: started with the real CLI, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(self, database_url: str, worker_id: str, **env: str) -> None:
        self.worker_id = worker_id
        full_env = dict(os.environ)
        full_env.update(
            RESOLUTE_DATABASE_URL=database_url,
            RESOLUTE_WORKER_ID=worker_id,
            RESOLUTE_LOG_LEVEL="WARNING",
            **env,
        )
        logs = ROOT / ".pytest_cache" / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = open(logs / f"{worker_id}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker", "tests.flows:worker"],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode


async def wait_until(pg: asyncpg.Connection, sql: str, *args: object, timeout: float = 30) -> None:
    """Poll until ``sql`` returns true."""
    deadline = time.monotonic() + timeout
    while not await pg.fetchval(sql, *args):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {sql}")
        await asyncio.sleep(0.05)
