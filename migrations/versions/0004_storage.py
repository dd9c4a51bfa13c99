"""Smaller writes per step boundary.

- ``flow_runs`` is updated at every step boundary. A low ``toast_tuple_target`` keeps the
  run's input out of line (compressed), so an update copies a pointer, not the whole
  input, into the new row version (and the WAL).
- ``flow_runs_correlation_key`` only indexes runs that have a key: runs without one do
  not pay for it on every non-HOT update.
- ``run_events_type_recorded`` cost an index insert per event; post-mortem queries reach
  events through their run (the primary key) instead.

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
    op.execute("ALTER TABLE flow_runs SET (toast_tuple_target = 128)")
    op.drop_index("run_events_type_recorded", table_name="run_events")
    op.drop_index("flow_runs_correlation_key", table_name="flow_runs")
    op.create_index(
        "flow_runs_correlation_key",
        "flow_runs",
        ["correlation_key"],
        postgresql_where="correlation_key IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("flow_runs_correlation_key", table_name="flow_runs")
    op.create_index("flow_runs_correlation_key", "flow_runs", ["correlation_key"])
    op.create_index("run_events_type_recorded", "run_events", ["type", "recorded_at"])
    op.execute("ALTER TABLE flow_runs RESET (toast_tuple_target)")
