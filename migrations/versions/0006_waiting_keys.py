"""Find the runs waiting for a signal under a correlation key of the wait's own.

``wait_for_signal(..., correlate=...)`` can wait under a key other than the run's
correlation key; a signal sent to that key must wake the run (and bump its
``signal_version``) even after the run left memory. The key lives only in the
``signal.waiting`` event, so index it there: a small partial index, waits are rare.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "run_events_waiting_key",
        "run_events",
        [sa.text("(data ->> 'correlation_key')")],
        postgresql_where=sa.text("type = 'signal.waiting'"),
    )


def downgrade() -> None:
    op.drop_index("run_events_waiting_key", table_name="run_events")
