"""Event log: flows, flow_runs, run_events (append-only), workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_STATUSES = "'pending', 'running', 'waiting', 'completed', 'failed', 'cancelled'"
ACTIVE = "'pending', 'running', 'waiting'"
EVENT_TYPES = ", ".join(
    repr(t)
    for t in (
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
)
TZ = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("task_queue", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("shape", pg.JSONB, nullable=False),
        sa.Column("registered_at", TZ, nullable=False, server_default=sa.text("now()")),
    )
    op.create_table(
        "flow_runs",
        sa.Column("run_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("flow", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("task_queue", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("input", pg.JSONB),
        sa.Column("correlation_key", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("parent_run_id", pg.UUID(as_uuid=False)),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_token", sa.BigInteger),
        sa.Column("wake_at", TZ),
        sa.Column("last_seq", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("result", pg.JSONB),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("completed_at", TZ),
        sa.CheckConstraint(f"status IN ({RUN_STATUSES})", name="flow_runs_status_check"),
        sa.UniqueConstraint("flow", "idempotency_key", name="flow_runs_idempotency_key"),
    )
    op.create_index("flow_runs_correlation_key", "flow_runs", ["correlation_key"])
    op.create_index("flow_runs_flow_created", "flow_runs", ["flow", "created_at"])
    op.create_index(
        "flow_runs_claimable",
        "flow_runs",
        ["task_queue", "wake_at"],
        postgresql_where=sa.text(f"lease_owner IS NULL AND status IN ({ACTIVE})"),
    )
    op.create_index(
        "flow_runs_leased",
        "flow_runs",
        ["lease_owner"],
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )
    op.create_table(
        "run_events",
        sa.Column(
            "run_id",
            pg.UUID(as_uuid=False),
            sa.ForeignKey("flow_runs.run_id", name="run_events_run_id_fkey"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("node_path", sa.Text),
        sa.Column("step", sa.Text),
        sa.Column("attempt", sa.Integer),
        sa.Column("data", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("recorded_at", TZ, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.Column("worker_id", sa.Text),
        sa.PrimaryKeyConstraint("run_id", "seq", name="run_events_pkey"),
        sa.CheckConstraint(f"type IN ({EVENT_TYPES})", name="run_events_type_check"),
    )
    op.create_index("run_events_type_recorded", "run_events", ["type", "recorded_at"])
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.Text, primary_key=True),
        sa.Column("task_queues", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("heartbeat_at", TZ, nullable=False, server_default=sa.text("now()")),
    )
    op.execute("CREATE SEQUENCE resolute_lease_token")
    # The log is append-only: history is never rewritten, only added to.
    op.execute(
        """
        CREATE FUNCTION resolute_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'run_events is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'events are never changed; append a new event instead';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER run_events_append_only BEFORE UPDATE OR DELETE ON run_events "
        "FOR EACH ROW EXECUTE FUNCTION resolute_reject_mutation()"
    )
    op.execute(
        "CREATE TRIGGER run_events_no_truncate BEFORE TRUNCATE ON run_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION resolute_reject_mutation()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE run_events")
    op.execute("DROP FUNCTION resolute_reject_mutation()")
    op.execute("DROP SEQUENCE resolute_lease_token")
    op.drop_table("workers")
    op.drop_table("flow_runs")
    op.drop_table("flows")
