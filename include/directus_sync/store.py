"""The remote-sources table: schema, idempotent migration, reads, and the parse-time snapshot.

The table lives in any database an Airflow connection points at (``directus_sync_db`` by default):
PostgreSQL through ``apache-airflow-providers-postgres`` in production, or an SQLite file for local use
(connection type ``sqlite``, host = the file's path). All access goes through SQLAlchemy Core so the same
code runs on both.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_DB_CONN_ID = "directus_sync_db"
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
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp(),
              onupdate=sa.func.current_timestamp()),
)


class ConfigStoreError(RuntimeError):
    """The remote-sources table could not be read or written."""


def engine_for(conn_id: str = DEFAULT_DB_CONN_ID) -> Engine:
    """An SQLAlchemy engine for the Airflow connection ``conn_id``, with a short connect timeout."""
    from airflow.sdk import BaseHook

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


def migrate(engine: Engine) -> None:
    """Create the package's tables where they are missing. Safe to run any number of times."""
    metadata.create_all(engine, checkfirst=True)


def read_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every row of the remote-sources table, in name order, as plain dicts."""
    with engine.connect() as conn:
        result = conn.execute(sa.select(remote_sources).order_by(remote_sources.c.name))
        return [dict(row._mapping) for row in result]


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


class Snapshot:
    """The last rows read from the table, kept as a JSON file.

    It bounds parse-time database reads to one per ``max_age`` seconds, lets workers build their one DAG
    without touching the database, and keeps the DAGs alive while the database is down.
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
    conn_id: str = DEFAULT_DB_CONN_ID,
    snapshot: Snapshot | None = None,
    max_age: float = 30.0,
    offline: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for the DAG factory, and a warning or error text when the table could not be read.

    Reads the snapshot when it is younger than ``max_age`` seconds or when ``offline`` (a worker building
    one DAG); otherwise reads the table, refreshes the snapshot, and falls back to it on failure.
    """
    snapshot = snapshot or Snapshot.default()
    age = snapshot.age()
    if age is not None and (offline or age < max_age):
        rows = snapshot.load()
        if rows is not None:
            return rows, None
    try:
        rows = [_plain(row) for row in read_rows(engine_for(conn_id))]
    except Exception as exc:
        problem = f"cannot read the remote-sources table through connection {conn_id!r}: {_first_line(exc)}"
        cached = snapshot.load()
        if cached is not None:
            log.warning("%s; using the snapshot from %s", problem, snapshot.path)
            return cached, None
        return [], problem
    snapshot.save(rows)
    return rows, None


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
