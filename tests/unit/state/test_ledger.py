"""The run ledger on SQLite: one row per run and collection, replaced on re-runs, read back newest first."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync.state import ledger, tables
from directus_sync.state.ledger import CollectionCounts, RunRecord, RunStatus

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    return engine


def run(run_id: str, finished: datetime, status: RunStatus = RunStatus.SUCCESS, remote: str = "eu_to_us",
        created: int = 1) -> RunRecord:
    return RunRecord(remote=remote, dag_id=f"directus_sync__{remote}", run_id=run_id, status=status,
                     finished_at=finished, started_at=finished - timedelta(seconds=12),
                     window_start=finished - timedelta(minutes=6), window_end=finished - timedelta(minutes=1),
                     collections=[CollectionCounts("articles", created=created, updated=2, skipped=3),
                                  CollectionCounts("authors", deleted=1)])


def test_a_run_writes_one_row_per_collection_with_its_counts_and_duration(engine: sa.engine.Engine) -> None:
    assert ledger.record(engine, run("r1", T0)) == 2
    rows = ledger.recent_runs(engine, "eu_to_us")
    assert [(r["collection"], r["created"], r["updated"], r["deleted"], r["skipped"]) for r in rows] == [
        ("articles", 1, 2, 0, 3), ("authors", 0, 0, 1, 0)]
    assert rows[0]["duration_seconds"] == 12.0
    assert rows[0]["window_end"] == T0 - timedelta(minutes=1)


def test_recording_the_same_airflow_run_again_replaces_its_rows(engine: sa.engine.Engine) -> None:
    ledger.record(engine, run("r1", T0, RunStatus.FAILED))
    ledger.record(engine, run("r1", T0 + timedelta(minutes=1), created=7))
    rows = ledger.recent_runs(engine)
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"success"}
    assert rows[0]["created"] == 7


def test_recent_runs_are_newest_first_limited_by_run_and_filtered_by_remote(engine: sa.engine.Engine) -> None:
    for n in range(5):
        ledger.record(engine, run(f"r{n}", T0 + timedelta(minutes=n)))
    ledger.record(engine, run("other", T0 + timedelta(hours=1), remote="eu_to_asia"))
    rows = ledger.recent_runs(engine, "eu_to_us", limit=2)
    assert [r["run_id"] for r in rows] == ["r4", "r4", "r3", "r3"]
    grouped = ledger.group_runs(ledger.recent_runs(engine))
    assert [g[0]["run_id"] for g in grouped][:2] == ["other", "r4"]


def test_lag_runs_from_the_end_of_the_last_successful_window(engine: sa.engine.Engine) -> None:
    ledger.record(engine, run("ok", T0))
    ledger.record(engine, run("bad", T0 + timedelta(minutes=10), RunStatus.FAILED))
    synced = ledger.last_synced(engine)
    assert synced == {"eu_to_us": T0 - timedelta(minutes=1)}
    assert ledger.lag(synced["eu_to_us"], now=T0 + timedelta(minutes=20)) == timedelta(minutes=21)
    assert ledger.lag(None) is None


def test_the_next_run_reads_on_from_the_latest_successful_run_that_kept_a_cursor(engine: sa.engine.Engine) -> None:
    kept = {"head": 120, "gaps": [{"low": 100, "high": 101, "since": T0.isoformat()}], "source": "directus_eu"}
    ledger.record(engine, dataclasses.replace(run("scheduled", T0), cursor=kept))
    ledger.record(engine, dataclasses.replace(run("failed", T0 + timedelta(minutes=5), RunStatus.FAILED),
                                              cursor={"head": 999}))
    ledger.record(engine, run("backfill", T0 + timedelta(minutes=10)))  # keeps no cursor
    assert ledger.last_cursor(engine, "eu_to_us") == kept
    assert ledger.last_cursor(engine, "another_remote") is None


def test_the_last_window_end_is_the_latest_successful_one_of_the_remote_from_any_of_its_dags_but_backfills(
        engine: sa.engine.Engine) -> None:
    assert ledger.last_window_end(engine, "eu_to_us") is None
    ledger.record(engine, run("scheduled", T0))
    ledger.record(engine, run("failed", T0 + timedelta(minutes=5), RunStatus.FAILED))
    ledger.record(engine, dataclasses.replace(run("backfill", T0 + timedelta(minutes=10)), run_type="backfill"))
    ledger.record(engine, run("other remote", T0 + timedelta(minutes=10), remote="eu_to_asia"))
    assert ledger.last_window_end(engine, "eu_to_us") == T0 - timedelta(minutes=1)
    # A reconcile's full comparison as of its window's end covers everything before it.
    reconcile = dataclasses.replace(run("reconcile", T0 + timedelta(minutes=3)), run_type="scheduled",
                                    dag_id="directus_sync__eu_to_us__reconcile", full_copy=True, window_start=None)
    ledger.record(engine, reconcile)
    assert ledger.last_window_end(engine, "eu_to_us") == T0 + timedelta(minutes=2)


@dataclasses.dataclass(frozen=True)
class Letter:
    collection: str
    key: str
    action: str = "update"
    error: str = "refused"


def test_dead_letters_are_bumped_while_refused_and_cleared_once_written(engine: sa.engine.Engine) -> None:
    assert ledger.record_dead_letters(engine, "eu_to_us", "r1", [Letter("articles", "6"), Letter("authors", "1")]) == 2
    ledger.record_dead_letters(engine, "eu_to_us", "r2", [Letter("articles", "6", error="still refused")])
    assert ledger.open_dead_letters(engine, "eu_to_us") == {"articles": {"6"}, "authors": {"1"}}
    assert ledger.dead_letters_of_run(engine, "eu_to_us", "r2") == {"articles": 1}
    with engine.connect() as conn:
        attempts, error = conn.execute(sa.select(tables.dead_letters.c.attempts, tables.dead_letters.c.error)
                                       .where(tables.dead_letters.c.item_key == "6")).one()
    assert (attempts, error) == (2, "still refused")
    assert ledger.clear_dead_letters(engine, "eu_to_us", "articles", ["6", "7"]) == 1
    assert ledger.clear_dead_letters(engine, "eu_to_us", "articles", []) == 0
    assert ledger.open_dead_letters(engine, "eu_to_us") == {"authors": {"1"}}
