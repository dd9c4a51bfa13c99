"""Migrations build exactly the declared schema; the log is append-only."""

from __future__ import annotations

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.schema import metadata
from orchestrator.store import Store


async def test_migrations_build_the_declared_schema(engine: AsyncEngine) -> None:
    def diff(sync_conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def _one_event(store: Store, pg: asyncpg.Connection) -> str:
    await store.register_flow("f", "q", "fp", [])
    run_id, _ = await store.start_run("f", {"x": 1})
    return run_id


async def test_run_events_reject_update(store: Store, pg: asyncpg.Connection) -> None:
    run_id = await _one_event(store, pg)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg.execute("UPDATE run_events SET type = 'run.failed' WHERE run_id = $1", run_id)


async def test_run_events_reject_delete(store: Store, pg: asyncpg.Connection) -> None:
    run_id = await _one_event(store, pg)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg.execute("DELETE FROM run_events WHERE run_id = $1", run_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg.execute("TRUNCATE run_events CASCADE")
    assert await pg.fetchval("SELECT count(*) FROM run_events") == 1
