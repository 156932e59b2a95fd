"""The package's tables (SQLAlchemy Core), where they live, and how they are brought to this version's schema.

The tables: the remote-sources rows (one per synced pair of instances, see :mod:`.sources`), the run
ledger with its dead letters and conflicts (:mod:`.ledger`), the leases that keep one writer per remote
(:mod:`.leases`), and the recorded origins of written values (``directus_sync.engine.origins``). Their
schema changes through the Alembic revisions in :mod:`.migrations` (:func:`migrate`).

They live in any database an Airflow connection points at (``directus_sync_db`` by default):
PostgreSQL through ``apache-airflow-providers-postgres`` in production, or an SQLite file for local use
(connection type ``sqlite``, host = the file's path). All access goes through SQLAlchemy Core so the same
code runs on both.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from directus_sync.state.migrations import Upgrade

DEFAULT_DB_CONN_ID = "directus_sync_db"
DB_CONN_ENV = "DIRECTUS_SYNC_DB_CONN_ID"
CONNECT_TIMEOUT_SECONDS = 5

metadata = sa.MetaData()

remote_sources = sa.Table(
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
    sa.Column("prune_files", sa.Boolean, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp(),
              onupdate=sa.func.current_timestamp()),
)


dead_letters = sa.Table(
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

conflicts = sa.Table(
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


# Per instance and item, where the value the sync last wrote there was first made (see origins.py).
origins = sa.Table(
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


runs = sa.Table(
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


# Which run may write each remote now (see leases.py): one row per remote connection ever written.
leases = sa.Table(
    "directus_sync_leases",
    metadata,
    sa.Column("target", sa.String(250), primary_key=True),
    sa.Column("holder_dag_id", sa.String(250), nullable=False),
    sa.Column("holder_run_id", sa.String(250), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


class ConfigStoreError(RuntimeError):
    """The remote-sources table could not be read or written."""


def default_conn_id() -> str:
    return os.environ.get(DB_CONN_ENV, DEFAULT_DB_CONN_ID)


def engine_for(conn_id: str | None = None) -> Engine:
    """An SQLAlchemy engine for the Airflow connection ``conn_id``, with a short connect timeout."""
    from airflow.sdk import BaseHook

    conn_id = conn_id or default_conn_id()
    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ConfigStoreError(
            f"Airflow connection {conn_id!r} for the remote-sources table is not defined: {exc}") from exc
    if connection.conn_type == "sqlite":
        path = connection.host or connection.schema
        if not path:
            raise ConfigStoreError(f"connection {conn_id!r} (sqlite) needs the database file path as host")
        return sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": CONNECT_TIMEOUT_SECONDS})
    hook = connection.get_hook()
    if not hasattr(hook, "get_sqlalchemy_engine"):
        raise ConfigStoreError(f"connection {conn_id!r} of type {connection.conn_type!r} is not a SQL database")
    engine: Engine = hook.get_sqlalchemy_engine(
        engine_kwargs={"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}, "pool_pre_ping": True})
    return engine


def migrate(engine: Engine) -> Upgrade:
    """Bring the package's tables to this version's schema: Alembic's head revision. Safe to repeat.

    The revisions ship in :mod:`directus_sync.state.migrations` and are recorded in their own version table
    (``directus_sync_alembic_version``); tables made before the migrations were Alembic's are stamped at
    the baseline and upgraded from there.
    """
    from directus_sync.state import migrations

    return migrations.upgrade(engine)


def json_value(value: Any) -> Any:
    """A JSON column's value as read: raw reads on SQLite return the text, decoded here.

    Text that is not JSON is returned as it is (for validation to report); other values pass through.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value
