"""The status page's data and HTML, from a remote-sources table and ledger on SQLite; who may see what."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from directus_sync.control import statuspage
from directus_sync.state import ledger, sources, tables
from directus_sync.state.ledger import CollectionCounts, RunRecord, RunStatus

NOW = datetime.now(UTC)
ROW = {"name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
       "schema": [{"name": "articles", "fields": ["title"]}]}


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    sources.upsert_row(engine, ROW)
    sources.upsert_row(engine, {**ROW, "name": "eu_to_asia", "schema": "not json"})
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
    from devtools import demo

    assert f"{statuspage.URL_PREFIX}/" == demo.STATUS_PAGE_PATH


# -- who sees what: the real app, Airflow's user dependency overridden, a fake auth manager deciding ----------

class OneDagAuthManager:
    """Lets every user read ``allowed`` only; records what it was asked."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[object, set[str]]] = []

    def filter_authorized_dag_ids(self, *, dag_ids: set[str], user: object, method: str = "GET",
                                  team_name: str | None = None) -> set[str]:
        assert method == "GET"
        self.asked.append((user, set(dag_ids)))
        return dag_ids & self.allowed


@pytest.fixture
def client(engine: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.core_api.security import get_user

    manager = OneDagAuthManager({"directus_sync__eu_to_us"})
    monkeypatch.setattr(airflow_app, "get_auth_manager", lambda: manager)
    monkeypatch.setattr(statuspage, "_engine", lambda: engine)
    statuspage.app.dependency_overrides[get_user] = lambda: "reader"
    try:
        with TestClient(statuspage.app) as test_client:
            test_client.manager = manager  # type: ignore[attr-defined]
            yield test_client
    finally:
        statuspage.app.dependency_overrides.clear()


def test_a_user_sees_only_the_remotes_whose_dag_the_auth_manager_lets_them_read(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'data-remote="eu_to_us"' in page.text
    assert "eu_to_asia" not in page.text and "schema" not in page.text  # no name, no error
    assert "1 remote " in page.text
    remotes = client.get("/api/remotes")
    assert remotes.status_code == 200
    assert [r["name"] for r in remotes.json()] == ["eu_to_us"]
    assert "eu_to_asia" not in remotes.text
    user, asked = client.manager.asked[-1]  # type: ignore[attr-defined]
    assert user == "reader" and asked == {"directus_sync__eu_to_us", "directus_sync__eu_to_asia"}


def test_runs_of_a_dag_the_user_may_not_read_are_left_out(engine: sa.engine.Engine) -> None:
    finished = NOW - timedelta(minutes=1)
    ledger.record(engine, RunRecord(
        remote="eu_to_us", dag_id="directus_sync__eu_to_us__reconcile", run_id="reconcile_run",
        status=RunStatus.SUCCESS, finished_at=finished, window_end=finished,
        collections=[CollectionCounts("articles", updated=1)]))
    statuses = statuspage.collect(engine, now=NOW)
    assert "directus_sync__eu_to_us__reconcile" in statuspage.dag_ids_asked(statuses)
    [shown] = statuspage.readable_by(statuses, {"directus_sync__eu_to_us"})
    assert [r["run_id"] for r in shown.recent] == ["run1", "run0"]
    assert shown.last_run is not None and shown.last_run["run_id"] == "run1"


def test_an_unreadable_table_is_shown_only_to_who_may_read_its_configuration_error_dag(
        tmp_path: Path) -> None:
    from directus_sync.airflow import factory

    assert statuspage.TABLE_DAG_NAME == factory.TABLE_DAG_NAME  # the DAG the DAG file makes of it
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-table.db'}")  # no remote-sources table in it
    [broken] = statuspage.collect(engine, now=NOW)
    assert (broken.name, broken.dag_id, broken.status) == ("remote_sources", "directus_sync__remote_sources",
                                                           "broken")
    assert broken.problem and "remote-sources table" in broken.problem
    assert statuspage.readable_by([broken], {"directus_sync__eu_to_us"}) == []
    assert statuspage.readable_by([broken], {"directus_sync__remote_sources"}) == [broken]


def test_without_a_login_a_user_query_parameter_gets_nothing(engine: sa.engine.Engine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statuspage, "_engine", lambda: engine)
    with TestClient(statuspage.app) as anonymous:
        for path in ("/", "/api/remotes", "/?user=x", "/api/remotes?user=admin"):
            response = anonymous.get(path)
            assert response.status_code in (401, 403), (path, response.status_code)
            assert "eu_to_us" not in response.text


def test_an_auth_manager_that_cannot_decide_refuses(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.api_fastapi import app as airflow_app

    def not_initialized() -> None:
        raise RuntimeError("Auth Manager has not been initialized yet.")

    monkeypatch.setattr(airflow_app, "get_auth_manager", not_initialized)
    for path in ("/", "/api/remotes"):
        response = client.get(path)
        assert response.status_code == 503 and "eu_to_us" not in response.text


@pytest.fixture
def without_airflow_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The status page module as imported where Airflow's security module cannot be imported."""
    monkeypatch.setitem(sys.modules, "airflow.api_fastapi.core_api.security", None)  # import raises ImportError
    broken = importlib.reload(statuspage)
    try:
        yield broken
    finally:
        monkeypatch.undo()
        importlib.reload(statuspage)


def test_without_airflow_authentication_every_request_is_refused(
        without_airflow_auth: ModuleType, engine: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(without_airflow_auth, "_engine", lambda: engine)
    with TestClient(without_airflow_auth.app) as refused:
        for path in ("/", "/api/remotes", "/?user=x", "/api/remotes?user=admin", "/anything"):
            response = refused.get(path)
            assert response.status_code == 503, (path, response.status_code)
            assert response.json() == {"detail": "Airflow authentication is unavailable"}
