"""Signals cannot slip past a run that is about to wait.

A worker reads a run's signal inbox, decides the run must wait, and releases it as
``waiting``. A signal sent in between used to find the run still ``running``: nothing
woke it, and the worker's in-memory poke was gone with the run. Now every signal
bumps ``signal_version`` on the active runs it targets (a row lock, so it orders with
the worker's append), and an append that releases a run as waiting makes it due at
once when the version moved since the worker read the inbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "flow_runs",
        sa.Column("signal_version", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("flow_runs", "signal_version")
