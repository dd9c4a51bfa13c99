"""Alembic environment: async engine, one advisory lock so concurrent starters don't race."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.database import MIGRATION_LOCK, resolve_database_url, sqlalchemy_url
from orchestrator.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    try:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()


async def _online() -> None:
    url = config.attributes.get("url") or resolve_database_url(None)
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `resolute db upgrade`")
asyncio.run(_online())
