"""Drop ``run_events_type_recorded``: it cost an index insert per event on the hot path,
and post-mortem queries reach events through their run (the primary key) instead.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("run_events_type_recorded", table_name="run_events")


def downgrade() -> None:
    op.create_index("run_events_type_recorded", "run_events", ["type", "recorded_at"])
