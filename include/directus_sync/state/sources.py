"""The remote-sources rows: reads and writes, and the dag-processor's snapshot of them.

The table (:data:`directus_sync.state.tables.remote_sources`) lives in the database of the
``directus_sync_db`` connection, see :mod:`directus_sync.state.tables`.

The dag-processor's full parses read the table through the snapshot (:func:`load_rows`); a worker
building one DAG to run its task reads that DAG's row from the table itself (:func:`read_rows_for_dag`).
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

from directus_sync.config import may_yield
from directus_sync.state.tables import ConfigStoreError, default_conn_id, engine_for, json_value, remote_sources

log = logging.getLogger(__name__)

JSON_COLUMNS = ("schema", "notify_users", "alerts")


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
    for name in JSON_COLUMNS:
        if name in row:
            row[name] = json_value(row[name])
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
