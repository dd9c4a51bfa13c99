"""Crash torture: SIGKILL two worker identities at random moments, then check the log.

The short run is part of ``make test``; ``make torture`` runs the long one
(marker ``torture_long``: at least 1,000 runs and 50 kills, sizes and seed
overridable with ``RESOLUTE_TORTURE_RUNS``, ``_KILLS`` and ``_SEED``).
"""

from __future__ import annotations

import os

import asyncpg
import pytest

from orchestrator.store import Store
from tests.torture.chaos import torture

pytestmark = pytest.mark.torture


async def test_crash_torture_short(store: Store, pg: asyncpg.Connection, database_url: str) -> None:
    report = await torture(database_url, store, pg, runs=120, kills=12, seed=6, timeout=45)
    print(report.summary())
    assert not report.violations, "\n".join([report.summary(), *report.violations[:20]])
    assert report.kills == 12


@pytest.mark.torture_long  # deselected by default (pyproject addopts); `make torture` selects it
async def test_crash_torture_long(store: Store, pg: asyncpg.Connection, database_url: str) -> None:
    runs = int(os.environ.get("RESOLUTE_TORTURE_RUNS", "1000"))
    kills = int(os.environ.get("RESOLUTE_TORTURE_KILLS", "60"))
    seed = int(os.environ.get("RESOLUTE_TORTURE_SEED", "1"))
    report = await torture(database_url, store, pg, runs=runs, kills=kills, seed=seed, timeout=300)
    print(report.summary())
    assert not report.violations, "\n".join([report.summary(), *report.violations[:20]])
    assert report.runs >= 1000 and report.kills >= 50
