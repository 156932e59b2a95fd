"""The remote-sources rows on SQLite: reads, writes, the parse-time snapshot and a worker's fresh read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync.state import sources, tables


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    return engine


ROW = {"name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
       "schema": [{"name": "articles", "fields": ["title"]}], "notify_users": ["u1"]}


def test_rows_are_upserted_by_name_and_read_back_with_their_json(engine: sa.engine.Engine) -> None:
    sources.upsert_row(engine, ROW)
    sources.upsert_row(engine, {**ROW, "status": "draft"})
    [row] = sources.read_rows(engine)
    assert row["status"] == "draft"
    assert row["schema"] == [{"name": "articles", "fields": ["title"]}]
    assert sources.delete_row(engine, "eu_to_us")
    assert sources.read_rows(engine) == []


def test_rows_come_from_the_table_through_an_airflow_connection(
        engine: sa.engine.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources.upsert_row(engine, ROW)
    monkeypatch.setenv("AIRFLOW_CONN_TABLE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "table.db")}))
    snapshot = sources.Snapshot(tmp_path / "snap.json")
    rows, problem = sources.load_rows("table_db", snapshot, max_age=0)
    assert problem is None
    assert [r["name"] for r in rows] == ["eu_to_us"]
    assert snapshot.load() == rows


def test_a_fresh_snapshot_spares_the_database(tmp_path: Path) -> None:
    snapshot = sources.Snapshot(tmp_path / "snap.json")
    snapshot.save([ROW])
    rows, problem = sources.load_rows("no_such_connection", snapshot, max_age=60)
    assert (rows, problem) == ([ROW], None)


def test_the_snapshot_keeps_the_dags_while_the_database_is_down(tmp_path: Path) -> None:
    snapshot = sources.Snapshot(tmp_path / "snap.json")
    snapshot.save([ROW])
    os.utime(snapshot.path, (0, 0))  # old: the table would be read first
    rows, problem = sources.load_rows("no_such_connection", snapshot, max_age=30)
    assert (rows, problem) == ([ROW], None)


def test_without_a_snapshot_an_unreadable_table_is_reported(tmp_path: Path) -> None:
    rows, problem = sources.load_rows("no_such_connection", sources.Snapshot(tmp_path / "none.json"), max_age=30)
    assert rows == []
    assert problem is not None
    assert "cannot read the remote-sources table through connection 'no_such_connection'" in problem


def test_a_worker_reads_only_the_rows_of_its_dag_from_the_table_now(
        engine: sa.engine.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources.upsert_row(engine, ROW)
    sources.upsert_row(engine, {**ROW, "name": "eu_to_asia"})
    sources.upsert_row(engine, {**ROW, "name": "Bad Name!", "schema": "not json"})  # invalid, still found
    monkeypatch.setenv("AIRFLOW_CONN_TABLE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "table.db")}))
    [row] = sources.read_rows_for_dag("directus_sync__eu_to_us", "table_db")
    assert row["name"] == "eu_to_us" and row["schema"] == ROW["schema"]
    assert [r["name"] for r in sources.read_rows_for_dag("directus_sync__eu_to_us__reconcile", "table_db")] == [
        "eu_to_us"]
    assert [r["name"] for r in sources.read_rows_for_dag("directus_sync__Bad_Name_", "table_db")] == ["Bad Name!"]
    assert sources.read_rows_for_dag("directus_sync__gone", "table_db") == []


def test_a_worker_is_told_which_connection_failed() -> None:
    with pytest.raises(tables.ConfigStoreError, match="through connection 'no_such_connection'"):
        sources.read_rows_for_dag("directus_sync__eu_to_us", "no_such_connection")
