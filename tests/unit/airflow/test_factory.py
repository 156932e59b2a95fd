"""The factory turns validated rows into sync DAGs of the documented shape."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import CronDataIntervalTimetable
from airflow.sdk.definitions.deadline import DeadlineReference

from directus_sync.airflow import factory
from directus_sync.airflow.factory import build_broken_dag, build_sync_dag, generate_dags
from directus_sync.config import BrokenRemote, RemoteSource
from directus_sync.state import sources, tables

REMOTE = RemoteSource.model_validate({
    "name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
    "schema": [{"name": "articles", "fields": ["title"]}], "schedule": "*/10 * * * *"})


def test_a_sync_dag_has_the_designed_tasks_in_order() -> None:
    dag = build_sync_dag(REMOTE)
    assert dag.dag_id == "directus_sync__eu_to_us"
    assert set(dag.task_ids) == {"extract_changes", "filter_schema", "apply_deletes", "apply_updates",
                                 "apply_creates", "cleanup_staging", "record_run", "notify_on_failure"}
    assert dag.get_task("filter_schema").upstream_task_ids == {"extract_changes"}
    # Deletes, creates, updates: creates before updates, which may point at created items (see engine/order.py).
    assert "apply_deletes" in dag.get_task("apply_creates").upstream_task_ids
    assert "apply_creates" in dag.get_task("apply_updates").upstream_task_ids
    notify = dag.get_task("notify_on_failure")
    assert notify.trigger_rule == "one_failed"
    assert notify.upstream_task_ids == {"extract_changes", "filter_schema", "apply_deletes", "apply_updates",
                                        "apply_creates"}


def test_a_sync_dag_runs_one_at_a_time_on_real_data_intervals() -> None:
    dag = build_sync_dag(REMOTE)
    assert dag.max_active_runs == 1
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert "full_resync" in dag.params
    assert {"directus-sync", "source:eu", "remote:us"} <= set(dag.tags)


def test_a_broken_row_becomes_a_dag_that_fails_and_notifies() -> None:
    dag = build_broken_dag(BrokenRemote(name="bad", error="remote-sources row 'bad' is invalid: x"))
    assert dag.dag_id == "directus_sync__bad"
    assert set(dag.task_ids) == {"validate_configuration", "notify_on_failure"}
    assert "CONFIGURATION ERROR" in (dag.description or "")
    notify = dag.get_task("notify_on_failure")
    assert notify.trigger_rule == "one_failed"
    assert step_results_of(notify) == ["validate_configuration"]


SYNC_STEPS = ["extract_changes", "filter_schema", "apply_deletes", "apply_updates", "apply_creates"]


def step_results_of(task: Any) -> list[str]:
    """The tasks whose results (XCom return values) ``task`` gets as its TaskFlow arguments, in order."""
    return [arg.operator.task_id for arg in task.op_args if arg.key == "return_value"]


def test_every_dag_and_task_has_the_owner() -> None:
    broken = build_broken_dag(BrokenRemote(name="bad", error="remote-sources row 'bad' is invalid: x"))
    events_remote = RemoteSource.model_validate({**REMOTE.model_dump(by_alias=True), "trigger": "events"})
    for dag in (build_sync_dag(REMOTE), build_sync_dag(REMOTE, reconcile=True), broken,
                build_sync_dag(events_remote)):
        assert dag.default_args["owner"] == factory.OWNER == "directus-sync"
        assert {t.owner for t in dag.tasks} == {"directus-sync"}, dag.dag_id
        assert dag.owner == "directus-sync"


def test_every_run_is_recorded_and_announces_each_remote_collection_as_an_asset() -> None:
    record = build_sync_dag(REMOTE).get_task("record_run")
    assert record.trigger_rule == "all_done"
    # It runs after the last write whatever happened, and reads each step's result (a failure record too).
    assert record.upstream_task_ids == set(SYNC_STEPS)
    assert [a.uri for a in record.outlets] == ["directus://us/articles"]


def test_record_run_and_notify_on_failure_read_the_steps_results_not_task_names() -> None:
    dag = build_sync_dag(REMOTE)
    assert step_results_of(dag.get_task("record_run")) == SYNC_STEPS
    assert step_results_of(dag.get_task("notify_on_failure")) == SYNC_STEPS
    # Each step hands its result to the next one the same way.
    assert step_results_of(dag.get_task("filter_schema")) == ["extract_changes"]
    assert all(step_results_of(dag.get_task(t)) == ["filter_schema"] for t in SYNC_STEPS[2:])


def test_a_deadline_alerts_when_a_run_is_not_done_in_time_after_being_queued() -> None:
    assert build_sync_dag(REMOTE).deadline is None
    late = REMOTE.model_copy(update={"deadline": timedelta(minutes=15), "notify_users": ("u1",)})
    [alert] = _alerts(build_sync_dag(late).deadline)
    assert alert.interval == timedelta(minutes=15)
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.callback.path == "directus_sync.airflow.alerts.on_deadline_missed"
    assert alert.callback.kwargs["deadline"] == "15 minutes"
    assert alert.callback.kwargs["notify_users"] == ["u1"]
    assert "token" not in str(alert.callback.kwargs).lower()


def _alerts(deadline: Any) -> list[Any]:
    return deadline if isinstance(deadline, list) else [deadline]


# A worker parses the DAG file for one task; the dag-processor parses it whole.

ROW: dict[str, Any] = {
    "name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
    "schema": [{"name": "articles", "fields": ["title", "body"]}], "reconcile_schedule": "0 3 * * *"}
CHANGED = {**ROW, "remote_conn_id": "us_new", "schema": [{"name": "articles", "fields": ["title"]}]}
DAG_ID = "directus_sync__eu_to_us"


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.engine.Engine:
    """The table on SQLite through an Airflow connection, a snapshot path of the test's own, no parsing context."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    monkeypatch.setenv("AIRFLOW_CONN_TABLE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "table.db")}))
    monkeypatch.setenv(tables.DB_CONN_ENV, "table_db")
    monkeypatch.setenv("DIRECTUS_SYNC_SNAPSHOT", str(tmp_path / "snap.json"))
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", raising=False)
    return engine


def _as_worker(monkeypatch: pytest.MonkeyPatch, dag_id: str) -> None:
    """What Airflow's task runner sets before parsing the file to run a task of ``dag_id``."""
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "extract_changes")


def _fresh_snapshot_of(rows: list[dict[str, Any]]) -> sources.Snapshot:
    snapshot = sources.Snapshot.default()
    snapshot.save(rows)
    return snapshot


def test_a_worker_builds_its_dag_from_the_row_as_it_is_now_not_from_a_fresh_snapshot(
        table: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = _fresh_snapshot_of([ROW])
    before = snapshot.path.read_text()
    sources.upsert_row(table, CHANGED)  # a field removed and the remote changed since the snapshot
    for n in range(20):  # other rows, one of them invalid: the worker does not validate them
        sources.upsert_row(table, {**ROW, "name": f"other_{n}", "remote_conn_id": "" if n == 7 else "x"})
    validated: list[str] = []
    real_parse_row = factory.parse_row
    monkeypatch.setattr(factory, "parse_row", lambda row: validated.append(row["name"]) or real_parse_row(row))
    _as_worker(monkeypatch, DAG_ID)

    [(dag_id, dag)] = generate_dags().items()

    assert dag_id == DAG_ID
    assert validated == ["eu_to_us"]
    assert "remote:us_new" in dag.tags and "remote:us" not in dag.tags
    assert [a.uri for a in dag.get_task("record_run").outlets] == ["directus://us_new/articles"]
    assert "`body`" not in (dag.doc_md or "")
    assert snapshot.path.read_text() == before  # neither used nor written


def test_a_worker_builds_the_reconcile_dag_alone_and_nothing_for_a_removed_row(
        table: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    sources.upsert_row(table, CHANGED)
    _as_worker(monkeypatch, DAG_ID + "__reconcile")
    [dag] = generate_dags().values()
    assert dag.dag_id == DAG_ID + "__reconcile"
    assert "remote:us_new" in dag.tags

    _fresh_snapshot_of([ROW])
    sources.delete_row(table, "eu_to_us")
    _as_worker(monkeypatch, DAG_ID)
    assert generate_dags() == {}


def test_a_worker_that_cannot_read_the_table_builds_nothing_and_says_why(
        table: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fresh_snapshot_of([ROW])  # would serve a full parse, not a worker
    monkeypatch.setenv(tables.DB_CONN_ENV, "no_such_connection")
    _as_worker(monkeypatch, DAG_ID)
    with caplog.at_level(logging.ERROR, logger="directus_sync.airflow.factory"):
        assert generate_dags() == {}
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"the task of DAG {DAG_ID} cannot run" in message
    assert "remote-sources table is unreachable through connection 'no_such_connection'" in message
    assert "Fix: make connection 'no_such_connection'" in message


def test_a_worker_of_the_dag_reporting_an_unreadable_table_still_gets_that_dag(
        table: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tables.DB_CONN_ENV, "no_such_connection")
    _as_worker(monkeypatch, "directus_sync__remote_sources")
    [dag] = generate_dags().values()
    assert "configuration-error" in dag.tags
    assert "no_such_connection" in (dag.description or "")


def test_a_full_parse_builds_from_a_fresh_snapshot_and_reads_the_table_once_it_is_old(
        table: sa.engine.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = _fresh_snapshot_of([ROW])
    sources.upsert_row(table, CHANGED)
    dags = generate_dags()
    assert set(dags) == {DAG_ID, DAG_ID + "__reconcile"}
    assert "remote:us" in dags[DAG_ID].tags  # the snapshot's row: within its max age, the table is not read

    os.utime(snapshot.path, (0, 0))
    dags = generate_dags()
    assert "remote:us_new" in dags[DAG_ID].tags
    assert [r["remote_conn_id"] for r in snapshot.load() or []] == ["us_new"]  # refreshed
