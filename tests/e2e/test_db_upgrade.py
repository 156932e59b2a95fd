"""A PostgreSQL database made by release 62fb753 (before the migrations were Alembic's), upgraded by this one.

No Directus: the old package's ``store.migrate`` creates the tables and writes a remote-sources row and a
ledger row in a subprocess; ``directus-sync db upgrade`` (this tree) then stamps and upgrades the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from devtools.devserver import PostgresDatabase
from directus_sync.state import migrations, sources, tables
from tests.support import rows_of

from .harness import REPO

OLD_RELEASE = "62fb753"

OLD_WRITES = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from directus_sync import ledger, store  # 62fb753's layout: flat modules, no state/ package

    assert store.__file__.startswith(sys.argv[2]), store.__file__
    engine = sa.create_engine(sys.argv[1])
    store.migrate(engine)
    store.upsert_row(engine, {"name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu",
                              "remote_conn_id": "directus_us", "schema": [{"name": "articles", "fields": ["title"]}],
                              "notify_users": ["u1"], "batch_size": 250})
    finished = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    ledger.record(engine, ledger.RunRecord(
        remote="eu_to_us", dag_id="directus_sync__eu_to_us", run_id="scheduled__1", status=ledger.RunStatus.SUCCESS,
        finished_at=finished, started_at=finished, cursor={"after": 41},
        collections=[ledger.CollectionCounts("articles", created=3, updated=1)]))
""")


@pytest.fixture
def database() -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(f"directus_sync_e2e_{os.getpid()}_db_upgrade")
    db.recreate()
    yield db
    db.drop()


@pytest.fixture
def old_package(tmp_path: Path) -> Path:
    """Release 62fb753's ``include/`` directory."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_RELEASE, "include/directus_sync"],
                             capture_output=True, check=True)
    target = tmp_path / "old"
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "include"


def test_a_database_made_by_62fb753_is_stamped_and_upgraded_to_head(
        database: PostgresDatabase, old_package: Path, tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-c", OLD_WRITES, database.url, str(old_package)],
                          env={**os.environ, "PYTHONPATH": str(old_package)}, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    engine = sa.create_engine(database.url)
    try:
        assert migrations.VERSION_TABLE not in sa.inspect(engine).get_table_names()

        connection = {"conn_type": "postgres", "host": database.host, "port": database.port,
                      "login": database.user, "password": database.password, "schema": database.name}
        env = {**os.environ, "PYTHONPATH": str(REPO / "include"), "AIRFLOW_HOME": str(tmp_path / "airflow"),
               "AIRFLOW_CONN_DIRECTUS_SYNC_DB": json.dumps(connection), "COLUMNS": "200"}
        cli = [sys.executable, "-m", "directus_sync.control.cli", "db"]
        upgraded = subprocess.run([*cli, "upgrade"], env=env, capture_output=True, text=True, timeout=180)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr[-3000:]
        assert f"from revision none (tables predating the migrations, stamped at the baseline) to " \
               f"{migrations.head()}" in upgraded.stdout

        assert migrations.current(engine) == migrations.head()
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")).scalars().all() \
                == [migrations.head()]
        present = set(sa.inspect(engine).get_table_names())
        assert "alembic_version" not in present  # Airflow's version table is not ours to make or touch

        [row] = sources.read_rows(engine)
        assert (row["name"], row["status"], row["batch_size"]) == ("eu_to_us", "published", 250)
        assert row["schema"] == [{"name": "articles", "fields": ["title"]}]
        [run] = rows_of(engine, tables.runs)
        assert (run["run_id"], run["collection"], run["created"], run["updated"], run["activity_cursor"]) \
            == ("scheduled__1", "articles", 3, 1, {"after": 41})

        _assert_schema_is_heads(engine)

        again = subprocess.run([*cli, "upgrade"], env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"at revision {migrations.head()}" in again.stdout and "nothing to do" in again.stdout
        current = subprocess.run([*cli, "current"], env=env, capture_output=True, text=True, timeout=180)
        assert f"revision {migrations.head()} (head {migrations.head()}): up to date" in current.stdout
    finally:
        engine.dispose()


def _assert_schema_is_heads(engine: sa.engine.Engine) -> None:
    """Columns, nullability, declared server defaults, indexes and unique constraints equal tables.metadata's."""
    with engine.connect() as conn:
        assert migrations.schema_differences(conn, tables.metadata) == []
    inspector = sa.inspect(engine)
    for table in tables.metadata.sorted_tables:
        reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(reflected) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            found = reflected[column.name]
            assert found["nullable"] == column.nullable, (table.name, column.name)
            if column.server_default is not None:
                assert found["default"] is not None, (table.name, column.name)
            elif not (column.primary_key and column.autoincrement is not False and
                      isinstance(column.type, sa.Integer)):
                assert found["default"] is None, (table.name, column.name)
        indexes = {(i["name"], tuple(i["column_names"]), bool(i["unique"]))
                   for i in inspector.get_indexes(table.name) if not i.get("duplicates_constraint")}
        assert indexes == {(str(i.name), tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
        assert uniques == {tuple(c.name for c in u.columns) for u in table.constraints
                           if isinstance(u, sa.UniqueConstraint)}, table.name


def test_what_the_add_column_era_lost_is_repaired_on_postgresql(database: PostgresDatabase) -> None:
    """Revision 0002 on PostgreSQL: a bare ADD COLUMN (NULLs, no NOT NULL, no default) and a missing index."""
    from directus_sync.state.migrations import baseline

    engine = sa.create_engine(database.url)
    try:
        baseline.define().create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE directus_sync_runs DROP COLUMN full_copy"))
            conn.execute(sa.text("ALTER TABLE directus_sync_runs ADD COLUMN full_copy BOOLEAN"))
            conn.execute(sa.text("ALTER TABLE directus_sync_remote_sources DROP COLUMN event_poll_seconds"))
            conn.execute(sa.text("DROP INDEX ix_directus_sync_runs_remote"))
            conn.execute(sa.text("ALTER TABLE directus_sync_dead_letters DROP CONSTRAINT uq_directus_sync_dead_letter"))
            conn.execute(sa.text(
                "INSERT INTO directus_sync_runs (remote, dag_id, run_id, collection, status, finished_at) "
                "VALUES ('eu_to_us', 'd', 'r', 'articles', 'success', now())"))
        done = migrations.upgrade(engine)
        assert (done.before, done.after, done.stamped) == (None, migrations.head(), True)
        _assert_schema_is_heads(engine)
        [run] = rows_of(engine, tables.runs)
        assert run["full_copy"] is False
        assert not migrations.upgrade(engine).changed
    finally:
        engine.dispose()
