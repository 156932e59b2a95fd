"""The package's Alembic migrations on SQLite: fresh databases, repeats, and tables predating Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync.state import migrations, sources, tables
from directus_sync.state.migrations import baseline
from tests.support import rows_of


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")


def differences(engine: sa.engine.Engine) -> list[object]:
    with engine.connect() as conn:
        return migrations.schema_differences(conn, tables.metadata)


def test_a_fresh_database_is_upgraded_from_nothing_to_head_in_its_own_version_table(
        engine: sa.engine.Engine) -> None:
    done = tables.migrate(engine)
    assert (done.before, done.after, done.stamped) == (None, migrations.head(), False)
    present = set(sa.inspect(engine).get_table_names())
    assert set(tables.metadata.tables) <= present
    assert migrations.VERSION_TABLE in present and "alembic_version" not in present
    assert migrations.current(engine) == migrations.head()
    assert differences(engine) == []


def test_upgrading_again_does_nothing(engine: sa.engine.Engine) -> None:
    tables.migrate(engine)
    sources.upsert_row(engine, {"name": "eu_to_us", "source_conn_id": "eu", "remote_conn_id": "us", "schema": []})
    again = tables.migrate(engine)
    assert not again.changed and again.before == again.after == migrations.head()
    assert [row["name"] for row in sources.read_rows(engine)] == ["eu_to_us"]


def test_airflows_alembic_version_in_the_same_database_is_left_alone(engine: sa.engine.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('airflow_rev')"))
    tables.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == ["airflow_rev"]


def _pre_alembic_database(engine: sa.engine.Engine) -> None:
    """Tables as an old ``migrate()`` left them: later columns missing or added bare, a later index missing."""
    baseline.define().create_all(engine)
    with engine.begin() as conn:
        for column in ("trigger", "event_poll_seconds"):  # an older release: the columns are not there yet
            conn.execute(sa.text(f'ALTER TABLE directus_sync_remote_sources DROP COLUMN "{column}"'))
        # The ADD COLUMN era: a column added without its NOT NULL and its default.
        conn.execute(sa.text("ALTER TABLE directus_sync_dead_letters DROP COLUMN attempts"))
        conn.execute(sa.text("ALTER TABLE directus_sync_dead_letters ADD COLUMN attempts INTEGER"))
        conn.execute(sa.text("DROP INDEX ix_directus_sync_runs_remote"))
        conn.execute(sa.text(
            "INSERT INTO directus_sync_remote_sources (name, status, source_conn_id, remote_conn_id, schema) "
            "VALUES ('eu_to_us', 'published', 'eu', 'us', '[]')"))
        now = datetime(2026, 1, 1, tzinfo=UTC)
        conn.execute(sa.text(
            "INSERT INTO directus_sync_dead_letters (remote, collection, item_key, action, error, run_id, "
            "first_seen, last_seen) VALUES ('eu_to_us', 'articles', '1', 'create', 'boom', 'r1', :t, :t)"),
            {"t": now})


def test_tables_predating_alembic_are_completed_stamped_at_the_baseline_and_repaired(
        engine: sa.engine.Engine) -> None:
    _pre_alembic_database(engine)
    assert differences(engine) != []
    done = tables.migrate(engine)
    assert (done.before, done.after, done.stamped) == (None, migrations.head(), True)
    assert differences(engine) == []
    inspector = sa.inspect(engine)
    attempts = {c["name"]: c for c in inspector.get_columns("directus_sync_dead_letters")}["attempts"]
    assert attempts["nullable"] is False and attempts["default"] is not None
    assert "ix_directus_sync_runs_remote" in {i["name"] for i in inspector.get_indexes("directus_sync_runs")}
    [row] = sources.read_rows(engine)
    assert (row["name"], row["status"], row["trigger"]) == ("eu_to_us", "published", None)
    [letter] = rows_of(engine, tables.dead_letters)
    assert letter["attempts"] == 1  # the NULL the bare column held became its default
    assert not tables.migrate(engine).changed


def test_tables_matching_the_baseline_are_stamped_without_changes(engine: sa.engine.Engine) -> None:
    baseline.define().create_all(engine)
    done = tables.migrate(engine)
    assert done.stamped and done.after == migrations.head()
    assert differences(engine) == []


def test_the_head_revision_is_this_versions_metadata() -> None:
    """A change to tables.py's tables needs a revision: a fresh upgrade must equal the live metadata."""
    engine = sa.create_engine("sqlite://")
    tables.migrate(engine)
    assert differences(engine) == []
