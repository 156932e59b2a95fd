"""The factory turns validated rows into sync DAGs of the documented shape."""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable

from directus_sync.config import BrokenRemote, RemoteSource
from directus_sync.factory import build_broken_dag, build_sync_dag

REMOTE = RemoteSource.model_validate({
    "name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
    "schema": [{"name": "articles", "fields": ["title"]}], "schedule": "*/10 * * * *"})


def test_a_sync_dag_has_the_designed_tasks_in_order() -> None:
    dag = build_sync_dag(REMOTE)
    assert dag.dag_id == "directus_sync__eu_to_us"
    assert set(dag.task_ids) == {"extract_changes", "filter_schema", "apply_deletes", "apply_updates",
                                 "apply_creates", "cleanup_staging", "notify_on_failure"}
    assert dag.get_task("filter_schema").upstream_task_ids == {"extract_changes"}
    assert "apply_deletes" in dag.get_task("apply_updates").upstream_task_ids
    assert "apply_updates" in dag.get_task("apply_creates").upstream_task_ids
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
