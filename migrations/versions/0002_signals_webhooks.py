"""Signals inbox and webhook deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signals",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("run_id", pg.UUID(as_uuid=False)),
        sa.Column("correlation_key", sa.Text),
        sa.Column("payload", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("sent_by", sa.Text),
        sa.Column("sent_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("idempotency_key", name="signals_idempotency_key"),
    )
    op.create_index("signals_run", "signals", ["run_id", "name"])
    op.create_index("signals_correlation", "signals", ["correlation_key", "name"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("delivery_id", sa.Text, nullable=False),
        sa.Column("received_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("headers", pg.JSONB, nullable=False),
        sa.Column("body", pg.JSONB),
        sa.Column("verification", sa.Text, nullable=False),
        sa.Column("correlation_key", sa.Text),
        sa.Column(
            "run_ids",
            pg.ARRAY(pg.UUID(as_uuid=False)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column(
            "signal_ids", pg.ARRAY(sa.BigInteger), nullable=False, server_default=sa.text("'{}'")
        ),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "verification IN ('verified', 'failed', 'none')",
            name="webhook_deliveries_verification_check",
        ),
    )
    # A redelivery never starts a second run; a forged delivery cannot squat on an id.
    op.create_index(
        "webhook_deliveries_dedup",
        "webhook_deliveries",
        ["route", "delivery_id"],
        unique=True,
        postgresql_where=sa.text("verification <> 'failed'"),
    )
    op.create_index("webhook_deliveries_received", "webhook_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("signals")
