"""The remote-sources table's ``prune_files`` column: whether runs delete the remote's copies of files no
item references any more (NULL, as on every row before it, means no).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("directus_sync_remote_sources") as table:
        table.add_column(sa.Column("prune_files", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("directus_sync_remote_sources") as table:
        table.drop_column("prune_files")
