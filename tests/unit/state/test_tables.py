"""The package's tables on SQLite: the idempotent migration, the connection's engine, JSON column values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync.state import tables


def test_the_migration_makes_every_table_and_can_run_again(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    assert not tables.migrate(engine).changed
    assert set(tables.metadata.tables) <= set(sa.inspect(engine).get_table_names())


def test_an_sqlite_connection_gives_an_engine_on_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TABLE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "t.db")}))
    monkeypatch.setenv(tables.DB_CONN_ENV, "table_db")
    assert tables.default_conn_id() == "table_db"
    engine = tables.engine_for()
    try:
        assert engine.url.database == str(tmp_path / "t.db")
    finally:
        engine.dispose()


def test_an_undefined_connection_is_a_config_store_error() -> None:
    with pytest.raises(tables.ConfigStoreError, match="'no_such_connection'"):
        tables.engine_for("no_such_connection")


@pytest.mark.parametrize(("raw", "value"), [
    ('[{"name": "articles"}]', [{"name": "articles"}]),  # SQLite's raw read: the text
    ([{"name": "articles"}], [{"name": "articles"}]),  # decoded by the driver already
    ("not json", "not json"),  # left for validation to report
    (None, None),
])
def test_a_json_column_value_is_decoded_once(raw: object, value: object) -> None:
    assert tables.json_value(raw) == value
