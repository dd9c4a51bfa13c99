"""Crash torture: SIGKILL two worker identities at random moments, then check the log.

The short run is part of ``make test`` (the test database server of tests/conftest.py).
``make torture`` runs the long one (marker ``torture_long``: at least 1,000 runs and 50
kills, on a private PostgreSQL cluster it also crashes and restarts every 10-15 kills;
sizes and seed overridable with ``RESOLUTE_TORTURE_RUNS``, ``_KILLS`` and ``_SEED``, the
short run's seed with ``RESOLUTE_TORTURE_SHORT_SEED``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.torture.chaos import torture
from tests.torture.cluster import PrivateCluster

pytestmark = pytest.mark.torture


async def test_crash_torture_short(database_url: str) -> None:
    seed = int(os.environ.get("RESOLUTE_TORTURE_SHORT_SEED", "6"))
    report = await torture(database_url, runs=120, kills=12, seed=seed, timeout=45)
    print(report.summary())
    assert not report.violations, "\n".join([report.summary(), *report.violations[:20]])
    assert report.kills == 12 and report.acks > 0 and report.delivered == report.acks


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of this test's own, migrated: never the machine's shared server."""
    cluster = PrivateCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.torture_long  # deselected by default (pyproject addopts); `make torture` selects it
async def test_crash_torture_long(private_cluster: PrivateCluster) -> None:
    runs = int(os.environ.get("RESOLUTE_TORTURE_RUNS", "1000"))
    kills = int(os.environ.get("RESOLUTE_TORTURE_KILLS", "60"))
    seed = int(os.environ.get("RESOLUTE_TORTURE_SEED", "1"))
    report = await torture(
        private_cluster.url,
        runs=runs,
        kills=kills,
        seed=seed,
        timeout=300,
        cluster=private_cluster,
    )
    print(report.summary())
    assert not report.violations, "\n".join([report.summary(), *report.violations[:20]])
    assert report.runs >= 1000 and report.kills >= 50 and report.pg_restarts >= 3
