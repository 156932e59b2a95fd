"""Baseline: the package's tables as release 62fb753 created them (see :mod:`directus_sync.state.migrations.baseline`).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from directus_sync.state.migrations import baseline

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in baseline.define().sorted_tables:
        table.create(op.get_bind())


def downgrade() -> None:
    for table in reversed(baseline.define().sorted_tables):
        table.drop(op.get_bind())
