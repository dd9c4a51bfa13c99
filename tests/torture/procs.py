"""Torture worker subprocesses: the real CLI, killed with SIGKILL (pattern of tests/workers.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".pytest_cache" / "torture"


class TortureWorker:
    """One worker identity; ``restart`` starts a fresh process under the same identity."""

    def __init__(self, database_url: str, worker_id: str, lease: float) -> None:
        self.worker_id = worker_id
        self.env = dict(
            os.environ,
            RESOLUTE_DATABASE_URL=database_url,
            RESOLUTE_WORKER_ID=worker_id,
            RESOLUTE_LOG_LEVEL="WARNING",
            RESOLUTE_TORTURE_LEASE=str(lease),
        )
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{worker_id}.log"
        self.log_path.unlink(missing_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "worker", "tests.torture.flows:worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self.started_at = time.monotonic()

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def describe_exit(self) -> str:
        """Why a process that nobody killed is gone: exit code, uptime, its last log lines."""
        code = self.proc.poll() if self.proc is not None else None
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return f"exit code {code} after {self.uptime:.1f}s; log {self.log_path}: " + " | ".join(
            tail
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        self.kill()
