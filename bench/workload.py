"""The incident-shape workload, identical for every engine.

Nine durable steps: parse -> {create_ticket, notify_chat, run_diagnostics} ->
add_ticket_comment -> add_incident_note -> (confidence > 0.9) -> execute_remediation ->
resolve_incident -> transition_ticket. Each does trivial pure work (below) plus one
side-effect row committed to ``bench.side_effects`` keyed (run, step); a repeated
execution bumps ``n`` instead of adding a row, so duplicates are ``sum(n - 1)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import asyncpg

STEPS = (
    "parse",
    "create_ticket",
    "notify_chat",
    "run_diagnostics",
    "add_ticket_comment",
    "add_incident_note",
    "execute_remediation",
    "resolve_incident",
    "transition_ticket",
)
FLOW = "incident-shape"
QUEUE = "bench"

SIDE_EFFECTS_DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.side_effects (
    run_id text NOT NULL,
    step text NOT NULL,
    n int NOT NULL DEFAULT 1,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step)
);
"""
_EFFECT = """
INSERT INTO bench.side_effects (run_id, step) VALUES ($1, $2)
ON CONFLICT (run_id, step) DO UPDATE SET n = bench.side_effects.n + 1
"""


def payload(i: int = 0) -> dict[str, Any]:
    """A PagerDuty v3 ``incident.triggered`` webhook body of about 2 KB."""
    pid = hashlib.sha1(str(i).encode()).hexdigest()[:14].upper()
    user = {
        "id": "PUSER01",
        "type": "user_reference",
        "summary": "On-call Engineer",
        "self": "https://api.pagerduty.com/users/PUSER01",
        "html_url": "https://acme.pagerduty.com/users/PUSER01",
    }
    return {
        "event": {
            "id": f"01{pid}",
            "event_type": "incident.triggered",
            "resource_type": "incident",
            "occurred_at": "2026-11-27T10:15:00.000Z",
            "agent": user,
            "client": {"name": "Monitoring Service", "url": "https://monitoring.example.com"},
            "data": {
                "id": f"Q{pid}",
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/Q{pid}",
                "html_url": f"https://acme.pagerduty.com/incidents/Q{pid}",
                "number": 1000 + i,
                "status": "triggered",
                "incident_key": f"db-primary-{i}",
                "created_at": "2026-11-27T10:15:00Z",
                "title": f"PostgreSQL primary unreachable (incident {i})",
                "service": {
                    "id": "PSVC001",
                    "type": "service_reference",
                    "summary": "payments-db",
                    "self": "https://api.pagerduty.com/services/PSVC001",
                    "html_url": "https://acme.pagerduty.com/service-directory/PSVC001",
                },
                "assignees": [user],
                "escalation_policy": {
                    "id": "PESC001",
                    "type": "escalation_policy_reference",
                    "summary": "Database on-call",
                    "self": "https://api.pagerduty.com/escalation_policies/PESC001",
                    "html_url": "https://acme.pagerduty.com/escalation_policies/PESC001",
                },
                "teams": [
                    {
                        "id": "PTEAM01",
                        "type": "team_reference",
                        "summary": "Storage",
                        "self": "https://api.pagerduty.com/teams/PTEAM01",
                        "html_url": "https://acme.pagerduty.com/teams/PTEAM01",
                    }
                ],
                "priority": {
                    "id": "PPRIO01",
                    "type": "priority_reference",
                    "summary": "P1",
                    "self": "https://api.pagerduty.com/priorities/PPRIO01",
                    "html_url": "https://acme.pagerduty.com/account/incident_priorities",
                },
                "urgency": "high",
                "conference_bridge": {"conference_number": "", "conference_url": ""},
                "resolve_reason": None,
                "body": {
                    "type": "incident_body",
                    "details": (
                        "Health check failed 3 times in a row on db-primary-1 "
                        "(10.0.3.12:5432): connection refused. Replication lag on "
                        "db-replica-2 is 48 s. Last successful checkpoint 10:14:02Z. "
                    ),
                },
            },
        }
    }


# --- the pure work of each step (JSON in, JSON out) -------------------------------------


def parse(body: dict[str, Any]) -> dict[str, Any]:
    data = body["event"]["data"]
    return {
        "id": data["id"],
        "title": data["title"],
        "urgency": data["urgency"],
        "service": data["service"]["summary"],
        "dedup_key": data["incident_key"],
        "url": data["html_url"],
    }


def create_ticket(event: dict[str, Any]) -> dict[str, Any]:
    return {"key": f"OPS-{int(event['id'][1:6], 16) % 10000}", "summary": event["title"]}


def notify_chat(event: dict[str, Any]) -> dict[str, Any]:
    return {"channel": "#incidents", "text": f":rotating_light: {event['title']}"}


def run_diagnostics(event: dict[str, Any]) -> dict[str, Any]:
    return {"confidence": 0.95, "summary": f"{event['service']}: primary down, replica healthy"}


def add_ticket_comment(key: str, summary: str) -> dict[str, Any]:
    return {"key": key, "body": summary}


def add_incident_note(event: dict[str, Any], summary: str) -> dict[str, Any]:
    return {"incident": event["id"], "note": summary}


def execute_remediation(diagnostics: dict[str, Any]) -> dict[str, Any]:
    return {"ok": diagnostics["confidence"] > 0.9, "action": "promote replica"}


def resolve_incident(event: dict[str, Any]) -> dict[str, Any]:
    return {"dedup_key": event["dedup_key"], "status": "resolved"}


def transition_ticket(ticket: dict[str, Any]) -> dict[str, Any]:
    return {"key": ticket["key"], "status": "Done"}


def confident(diagnostics: dict[str, Any]) -> bool:
    return float(diagnostics["confidence"]) > 0.9


# --- side effects, from inside a worker process -----------------------------------------


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The side-effect INSERT leaves no session state behind to reset."""


async def effects_pool(url: str, size: int) -> asyncpg.Pool:
    """Opened up front, and without asyncpg's reset round trip on every release, so
    the side effect costs every engine (and the floor) exactly one commit."""
    return await asyncpg.create_pool(url, min_size=size, max_size=size, reset=_no_reset)


async def effect(pool: asyncpg.Pool, run_id: str, step: str) -> None:
    await pool.execute(_EFFECT, run_id, step)


class Effects:
    """The worker process's side-effect pool; ``diag_sleep`` stretches run_diagnostics."""

    pool: asyncpg.Pool | None = None
    diag_sleep: float = float(os.environ.get("BENCH_DIAG_SLEEP", "0"))

    @classmethod
    async def open(cls, url: str, size: int) -> None:
        cls.pool = await effects_pool(url, size)

    @classmethod
    async def close(cls) -> None:
        if cls.pool is not None:
            await cls.pool.close()
            cls.pool = None

    @classmethod
    async def record(cls, run_id: str, step: str) -> None:
        assert cls.pool is not None, "Effects.open() first"
        if step == "run_diagnostics" and cls.diag_sleep:
            await asyncio.sleep(cls.diag_sleep)
        await effect(cls.pool, run_id, step)


# --- database helpers (run from the harness, never inside an engine's transaction) -----


def with_database(url: str, name: str) -> str:
    return f"{url.rsplit('/', 1)[0]}/{name}"


async def recreate_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SIDE_EFFECTS_DDL)
    finally:
        await conn.close()
    return url


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def wal_lsn(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))


async def wal_bytes(conn: asyncpg.Connection, since: str) -> int:
    """WAL the whole server wrote since ``since`` (anything else running counts too)."""
    diff = await conn.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", since
    )
    return int(diff)


async def tuple_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows inserted/updated/deleted in the engine's tables (side effects excluded)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await conn.fetchrow(
        """SELECT coalesce(sum(n_tup_ins), 0) ins, coalesce(sum(n_tup_upd), 0) upd,
                  coalesce(sum(n_tup_del), 0) del
             FROM pg_stat_user_tables WHERE schemaname <> 'bench'"""
    )
    assert row is not None
    return {k: int(row[k]) for k in ("ins", "upd", "del")}


async def sessions(conn: asyncpg.Connection) -> int:
    """Sessions established to this database so far (as flushed to the statistics)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    n = await conn.fetchval(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(n)


async def duplicates(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(n - 1), 0) FROM bench.side_effects"))
