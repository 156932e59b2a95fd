"""The package's tables as release 62fb753 created them: the schema revision ``0001`` stands for.

Frozen on purpose: revisions build on this, never on :mod:`directus_sync.state.tables`'s live metadata, so that
changing the live tables later needs a new revision instead of silently rewriting an old one.
"""

from __future__ import annotations

import sqlalchemy as sa


def define() -> sa.MetaData:
    """A new MetaData holding the baseline tables."""
    metadata = sa.MetaData()
    sa.Table(
        "directus_sync_remote_sources",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="draft"),
        sa.Column("source_conn_id", sa.String(250), nullable=False),
        sa.Column("remote_conn_id", sa.String(250), nullable=False),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("notify_users", sa.JSON, nullable=True),
        sa.Column("schedule", sa.String(120), nullable=True),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overlap_seconds", sa.Integer, nullable=True),
        sa.Column("batch_size", sa.Integer, nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("http_retries", sa.Integer, nullable=True),
        sa.Column("http_timeout_seconds", sa.Integer, nullable=True),
        sa.Column("write_concurrency", sa.Integer, nullable=True),
        sa.Column("conflict_policy", sa.String(32), nullable=True),
        sa.Column("reconcile_schedule", sa.String(120), nullable=True),
        sa.Column("reconcile_prune", sa.Boolean, nullable=True),
        sa.Column("deadline", sa.String(40), nullable=True),
        sa.Column("alerts", sa.JSON, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("trigger", sa.String(16), nullable=True),
        sa.Column("event_poll_seconds", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp()),
    )
    sa.Table(
        "directus_sync_dead_letters",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("remote", sa.String(63), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.UniqueConstraint("remote", "collection", "item_key", name="uq_directus_sync_dead_letter"),
    )
    sa.Table(
        "directus_sync_conflicts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("remote", sa.String(63), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("source_changed_at", sa.String(40), nullable=True),
        sa.Column("remote_changed_at", sa.String(40), nullable=True),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("winner", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "directus_sync_origins",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(250), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("item_key", sa.String(255), nullable=False),
        sa.Column("origin_instance", sa.String(250), nullable=False),
        sa.Column("origin_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("instance", "collection", "item_key", name="uq_directus_sync_origin"),
        sa.Index("ix_directus_sync_origins_time", "instance", "collection", "origin_at"),
    )
    sa.Table(
        "directus_sync_runs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("remote", sa.String(63), nullable=False, index=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("run_type", sa.String(32), nullable=True),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_copy", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("full_reason", sa.Text, nullable=True),
        sa.Column("activity_cursor", sa.JSON, nullable=True),
        sa.Column("created", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("conflicts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dead_letters", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dag_id", "run_id", "collection", name="uq_directus_sync_run_collection"),
    )
    sa.Table(
        "directus_sync_leases",
        metadata,
        sa.Column("target", sa.String(250), primary_key=True),
        sa.Column("holder_dag_id", sa.String(250), nullable=False),
        sa.Column("holder_run_id", sa.String(250), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    return metadata
