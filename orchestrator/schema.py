"""The declared schema. Migrations create it; ``tests/test_schema.py`` proves they match.

Table names are a public SQL surface: operators query them in post-mortems.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

__all__ = [
    "ACTIVE_STATUSES",
    "EVENT_TYPES",
    "RUN_STATUSES",
    "flow_runs",
    "flows",
    "metadata",
    "run_events",
    "signals",
    "webhook_deliveries",
    "workers",
]

metadata = MetaData()

RUN_STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("pending", "running", "waiting")
EVENT_TYPES = (
    "run.started",
    "run.resumed",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "step.started",
    "step.completed",
    "step.failed",
    "step.cancelled",
    "branch.decided",
    "parallel.started",
    "parallel.completed",
    "timer.started",
    "timer.fired",
    "signal.waiting",
    "signal.received",
    "signal.timed_out",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _tz() -> TIMESTAMP:
    return TIMESTAMP(timezone=True)


flows = Table(
    "flows",
    metadata,
    Column("name", Text, primary_key=True),
    Column("task_queue", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("shape", JSONB, nullable=False),
    Column("registered_at", _tz(), nullable=False, server_default=text("now()")),
)

flow_runs = Table(
    "flow_runs",
    metadata,
    Column("run_id", UUID(as_uuid=False), primary_key=True),
    Column("flow", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("task_queue", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("input", JSONB),
    Column("correlation_key", Text),
    Column("idempotency_key", Text),
    Column("parent_run_id", UUID(as_uuid=False)),
    Column("lease_owner", Text),
    Column("lease_token", BigInteger),
    Column("wake_at", _tz()),
    Column("last_seq", Integer, nullable=False, server_default=text("0")),
    # Bumped by every signal to the run (see migration 0005).
    Column("signal_version", BigInteger, nullable=False, server_default=text("0")),
    Column("result", JSONB),
    Column("error", Text),
    Column("created_at", _tz(), nullable=False, server_default=text("now()")),
    Column("updated_at", _tz(), nullable=False, server_default=text("now()")),
    Column("completed_at", _tz()),
    CheckConstraint(_in("status", RUN_STATUSES), name="flow_runs_status_check"),
    UniqueConstraint("flow", "idempotency_key", name="flow_runs_idempotency_key"),
)
Index(
    "flow_runs_correlation_key",
    flow_runs.c.correlation_key,
    postgresql_where=text("correlation_key IS NOT NULL"),
)
Index("flow_runs_flow_created", flow_runs.c.flow, flow_runs.c.created_at)
Index(
    "flow_runs_claimable",
    flow_runs.c.task_queue,
    flow_runs.c.wake_at,
    postgresql_where=text(f"lease_owner IS NULL AND {_in('status', ACTIVE_STATUSES)}"),
)
Index(
    "flow_runs_leased",
    flow_runs.c.lease_owner,
    postgresql_where=text("lease_owner IS NOT NULL"),
)

run_events = Table(
    "run_events",
    metadata,
    Column(
        "run_id",
        UUID(as_uuid=False),
        ForeignKey("flow_runs.run_id", name="run_events_run_id_fkey"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("node_path", Text),
    Column("step", Text),
    Column("attempt", Integer),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("recorded_at", _tz(), nullable=False, server_default=text("clock_timestamp()")),
    Column("worker_id", Text),
    # sha256 chained to the previous event of the run; set by a trigger (migration 0003)
    Column("hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("run_id", "seq", name="run_events_pkey"),
    CheckConstraint(_in("type", EVENT_TYPES), name="run_events_type_check"),
)
# Runs waiting under a correlation key of the wait's own (migration 0006).
Index(
    "run_events_waiting_key",
    run_events.c.data["correlation_key"].astext,
    postgresql_where=text("type = 'signal.waiting'"),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", Text, primary_key=True),
    Column("task_queues", ARRAY(Text), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", _tz(), nullable=False, server_default=text("now()")),
    Column("heartbeat_at", _tz(), nullable=False, server_default=text("now()")),
)

signals = Table(
    "signals",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("run_id", UUID(as_uuid=False)),
    Column("correlation_key", Text),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("idempotency_key", Text),
    Column("sent_by", Text),
    Column("sent_at", _tz(), nullable=False, server_default=text("now()")),
    UniqueConstraint("idempotency_key", name="signals_idempotency_key"),
)
Index("signals_run", signals.c.run_id, signals.c.name)
Index("signals_correlation", signals.c.correlation_key, signals.c.name)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("route", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("received_at", _tz(), nullable=False, server_default=text("now()")),
    Column("headers", JSONB, nullable=False),
    Column("body", JSONB),
    Column("verification", Text, nullable=False),
    Column("correlation_key", Text),
    Column("run_ids", ARRAY(UUID(as_uuid=False)), nullable=False, server_default=text("'{}'")),
    Column("signal_ids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
    Column("error", Text),
    CheckConstraint(
        "verification IN ('verified', 'failed', 'none')",
        name="webhook_deliveries_verification_check",
    ),
)
Index(
    "webhook_deliveries_dedup",
    webhook_deliveries.c.route,
    webhook_deliveries.c.delivery_id,
    unique=True,
    postgresql_where=text("verification <> 'failed'"),
)
Index("webhook_deliveries_received", webhook_deliveries.c.received_at)
