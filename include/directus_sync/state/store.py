"""The remote-sources table: schema, migration (Alembic, see migrations/), reads, and the parse-time snapshot.

The table lives in any database an Airflow connection points at (``directus_sync_db`` by default):
PostgreSQL through ``apache-airflow-providers-postgres`` in production, or an SQLite file for local use
(connection type ``sqlite``, host = the file's path). All access goes through SQLAlchemy Core so the same
code runs on both.

The dag-processor's full parses read the table through the snapshot (:func:`load_rows`); a worker
building one DAG to run its task reads that DAG's row from the table itself (:func:`read_rows_for_dag`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from directus_sync.config import may_yield

if TYPE_CHECKING:
    from directus_sync.state.migrations import Upgrade

log = logging.getLogger(__name__)

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


# Which run may write each remote now (see lease.py): one row per remote connection ever written.
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


def read_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every row of the remote-sources table, in name order, as plain dicts.

    Reads whatever columns the table has, so a table not yet upgraded to this version's columns still
    yields its DAGs (missing columns take their defaults).
    """
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {remote_sources.name} ORDER BY name"))
        return [_decode_json_columns(dict(row._mapping)) for row in result]


def _decode_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Raw reads return JSON columns as text on SQLite; text that is not JSON is left for validation."""
    for name in ("schema", "notify_users", "alerts"):
        if isinstance(row.get(name), str):
            with contextlib.suppress(ValueError):
                row[name] = json.loads(row[name])
    return row


def upsert_row(engine: Engine, row: dict[str, Any]) -> None:
    """Insert the row, or update the row with the same ``name``."""
    with engine.begin() as conn:
        exists = conn.execute(sa.select(remote_sources.c.id).where(remote_sources.c.name == row["name"]))
        if exists.first():
            conn.execute(remote_sources.update().where(remote_sources.c.name == row["name"]).values(**row))
        else:
            conn.execute(remote_sources.insert().values(**row))


def delete_row(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        return bool(conn.execute(remote_sources.delete().where(remote_sources.c.name == name)).rowcount)


def open_dead_letters(engine: Engine, remote: str) -> dict[str, set[str]]:
    """The keys of ``remote`` still in the dead-letter table, per collection."""
    query = sa.select(dead_letters.c.collection, dead_letters.c.item_key).where(dead_letters.c.remote == remote)
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for collection, key in conn.execute(query):
            found.setdefault(collection, set()).add(key)
    return found


def record_dead_letters(engine: Engine, remote: str, run_id: str, failures: Iterable[Any]) -> int:
    """Insert each failure, or bump ``attempts`` and ``last_seen`` of the one already there."""
    now = datetime.now(UTC)
    count = 0
    with engine.begin() as conn:
        for failure in failures:
            where = sa.and_(dead_letters.c.remote == remote, dead_letters.c.collection == failure.collection,
                            dead_letters.c.item_key == failure.key)
            values = {"action": failure.action, "error": failure.error[:4000], "run_id": run_id, "last_seen": now}
            updated = conn.execute(dead_letters.update().where(where).values(
                attempts=dead_letters.c.attempts + 1, **values)).rowcount
            if not updated:
                conn.execute(dead_letters.insert().values(remote=remote, collection=failure.collection,
                                                          item_key=failure.key, first_seen=now, attempts=1,
                                                          **values))
            count += 1
    return count


def clear_dead_letters(engine: Engine, remote: str, collection: str, keys: Iterable[str]) -> int:
    keys = list(keys)
    if not keys:
        return 0
    with engine.begin() as conn:
        return int(conn.execute(dead_letters.delete().where(
            dead_letters.c.remote == remote, dead_letters.c.collection == collection,
            dead_letters.c.item_key.in_(keys))).rowcount)


def record_conflicts(engine: Engine, remote: str, run_id: str, policy: str, records: Iterable[Any]) -> int:
    now = datetime.now(UTC)
    rows = [{"remote": remote, "collection": r.collection, "item_key": r.key, "source_changed_at": r.source_at,
             "remote_changed_at": r.remote_at, "policy": policy, "winner": r.winner, "run_id": run_id,
             "recorded_at": now} for r in records]
    if rows:
        with engine.begin() as conn:
            conn.execute(conflicts.insert(), rows)
    return len(rows)


def rows_of(engine: Engine, table: sa.Table, remote: str | None = None) -> list[dict[str, Any]]:
    """Rows of one of the package's tables, optionally for one remote, newest first."""
    query = sa.select(table).order_by(table.c.id.desc())
    if remote is not None:
        query = query.where(table.c.remote == remote)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


class Snapshot:
    """The last rows read from the table, kept as a JSON file.

    It bounds the dag-processor's database reads to one per ``max_age`` seconds and keeps the DAGs alive
    while the database is down. Workers never use it: they read their DAG's row from the table itself.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> Snapshot:
        explicit = os.environ.get("DIRECTUS_SYNC_SNAPSHOT")
        if explicit:
            return cls(Path(explicit))
        home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
        return cls(home / "directus_sync" / "remote_sources.json")

    def age(self) -> float | None:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def load(self) -> list[dict[str, Any]] | None:
        try:
            return list(json.loads(self.path.read_text())["rows"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def save(self, rows: Iterable[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"rows": list(rows)}, default=_json_default, sort_keys=True)
        # Write then rename, so a reader in another process never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".remote_sources.")
        with os.fdopen(fd, "w") as handle:
            handle.write(payload)
        os.replace(tmp, self.path)


def load_rows(
    conn_id: str | None = None,
    snapshot: Snapshot | None = None,
    max_age: float = 30.0,
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for the dag-processor's full parse, and an error text when the table could not be read.

    Reads the snapshot when it is younger than ``max_age`` seconds; otherwise reads the table, refreshes
    the snapshot, and falls back to it on failure.
    """
    snapshot = snapshot or Snapshot.default()
    age = snapshot.age()
    if age is not None and age < max_age:
        rows = snapshot.load()
        if rows is not None:
            return rows, None
    try:
        rows = read_table_now(conn_id)
    except ConfigStoreError as exc:
        cached = snapshot.load()
        if cached is not None:
            log.warning("%s; using the snapshot from %s", exc, snapshot.path)
            return cached, None
        return [], str(exc)
    snapshot.save(rows)
    return rows, None


def read_rows_for_dag(dag_id: str, conn_id: str | None = None) -> list[dict[str, Any]]:
    """The rows of the table, read now, that may become DAG ``dag_id`` (usually one; none when removed).

    For a worker about to run one of the DAG's tasks: no snapshot, so that a row changed or removed a
    moment ago never runs with its old settings. The rows are not validated; raises
    :class:`ConfigStoreError` when the table cannot be read.
    """
    return [row for row in read_table_now(conn_id) if may_yield(row, dag_id)]


def read_table_now(conn_id: str | None = None) -> list[dict[str, Any]]:
    """Every row of the table through connection ``conn_id`` (one SELECT, short connect timeout), JSON-ready.

    Raises :class:`ConfigStoreError` saying which connection failed and why.
    """
    conn_id = conn_id or default_conn_id()
    try:
        engine = engine_for(conn_id)
        try:
            return [_plain(row) for row in read_rows(engine)]
        finally:
            engine.dispose()
    except Exception as exc:
        raise ConfigStoreError(f"cannot read the remote-sources table through connection {conn_id!r}: "
                               f"{_first_line(exc)}") from exc


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()
            if k not in ("created_at", "updated_at")}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
