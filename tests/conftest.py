"""Real PostgreSQL for every test, never a mock.

``RESOLUTE_TEST_DATABASE_URL`` points at a server (CI: the machine's PostgreSQL);
without it the tests start an embedded one. Migrations build a template database once
per session; each test gets its own clone.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.database import (
    asyncpg_dsn,
    create_engine,
    embedded_url,
    migrate_sync,
    with_database,
)
from orchestrator.store import Store


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("RESOLUTE_TEST_DATABASE_URL")
    if url:
        return url
    home = Path(tempfile.gettempdir()) / f"resolute-test-pg-{os.getuid()}"
    return embedded_url(home, database="postgres")


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    import asyncio

    name = f"resolute_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    migrate_sync(with_database(server_url, name))
    yield name
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"resolute_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    url = with_database(server_url, name)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:  # where test nodes record their side effects, outside Resolute's schema
        await conn.execute(
            "CREATE SCHEMA tests; CREATE TABLE tests.side_effects (run_id uuid, step text, "
            "attempt int, note text, at timestamptz DEFAULT clock_timestamp())"
        )
    finally:
        await conn.close()
    yield url
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> Store:
    return Store(engine)


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for assertions written as SQL."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    yield conn
    await conn.close()
