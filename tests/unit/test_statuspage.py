"""The status page's data and HTML, from a remote-sources table and ledger on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync import ledger, statuspage, store
from directus_sync.ledger import CollectionCounts, RunRecord, RunStatus

NOW = datetime.now(UTC)
ROW = {"name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
       "schema": [{"name": "articles", "fields": ["title"]}]}


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    store.migrate(engine)
    store.upsert_row(engine, ROW)
    store.upsert_row(engine, {**ROW, "name": "eu_to_asia", "schema": "not json"})
    for n, status in enumerate([RunStatus.SUCCESS, RunStatus.FAILED]):
        finished = NOW - timedelta(minutes=10 - n)
        ledger.record(engine, RunRecord(
            remote="eu_to_us", dag_id="directus_sync__eu_to_us", run_id=f"run{n}", status=status,
            finished_at=finished, window_end=finished - timedelta(minutes=1),
            collections=[CollectionCounts("articles", created=5 + n, skipped=1)]))
    return engine


def test_each_remote_shows_its_status_last_run_lag_and_history(engine: sa.engine.Engine) -> None:
    statuses = {s.name: s for s in statuspage.collect(engine, now=NOW)}
    synced = statuses["eu_to_us"]
    assert synced.status == "published"
    assert synced.last_run is not None and synced.last_run["run_id"] == "run1"
    assert synced.last_run["status"] == "failed"
    assert [r["written"] for r in synced.recent] == [6, 5]
    assert synced.lag == timedelta(minutes=11)  # the failed run does not count as synced
    broken = statuses["eu_to_asia"]
    assert broken.status == "broken" and broken.problem and "schema" in broken.problem
    assert broken.last_run is None and broken.lag is None


def test_the_page_lists_every_remote_with_a_chart_and_a_link_to_its_dag(engine: sa.engine.Engine) -> None:
    page = statuspage.render(statuspage.collect(engine, now=NOW), airflow_root="/airflow")
    assert 'data-remote="eu_to_us"' in page and 'data-remote="eu_to_asia"' in page
    assert 'href="/airflow/dags/directus_sync__eu_to_us"' in page
    assert page.count("<rect") == 2
    assert "never synced" in page
    assert "token" not in page.lower()


def test_the_demo_prints_the_status_page_where_the_plugin_mounts_it() -> None:
    from directus_sync import demo

    assert f"{statuspage.URL_PREFIX}/" == demo.STATUS_PAGE_PATH
