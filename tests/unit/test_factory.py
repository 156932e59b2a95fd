"""The factory turns validated rows into sync DAGs of the documented shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable
from airflow.sdk.definitions.deadline import DeadlineReference

from directus_sync.config import BrokenRemote, RemoteSource
from directus_sync.factory import build_broken_dag, build_sync_dag

REMOTE = RemoteSource.model_validate({
    "name": "eu_to_us", "status": "published", "source_conn_id": "eu", "remote_conn_id": "us",
    "schema": [{"name": "articles", "fields": ["title"]}], "schedule": "*/10 * * * *"})


def test_a_sync_dag_has_the_designed_tasks_in_order() -> None:
    dag = build_sync_dag(REMOTE)
    assert dag.dag_id == "directus_sync__eu_to_us"
    assert set(dag.task_ids) == {"extract_changes", "filter_schema", "apply_deletes", "apply_updates",
                                 "apply_creates", "cleanup_staging", "record_run", "notify_on_failure"}
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


def test_every_run_is_recorded_and_announces_each_remote_collection_as_an_asset() -> None:
    record = build_sync_dag(REMOTE).get_task("record_run")
    assert record.trigger_rule == "all_done"
    assert record.upstream_task_ids == {"apply_deletes", "apply_updates", "apply_creates"}
    assert [a.uri for a in record.outlets] == ["directus://us/articles"]


def test_a_deadline_alerts_when_a_run_is_not_done_in_time_after_being_queued() -> None:
    assert build_sync_dag(REMOTE).deadline is None
    late = REMOTE.model_copy(update={"deadline": timedelta(minutes=15), "notify_users": ("u1",)})
    [alert] = _alerts(build_sync_dag(late).deadline)
    assert alert.interval == timedelta(minutes=15)
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.callback.path == "directus_sync.alerts.on_deadline_missed"
    assert alert.callback.kwargs["deadline"] == "15 minutes"
    assert alert.callback.kwargs["notify_users"] == ["u1"]
    assert "token" not in str(alert.callback.kwargs).lower()


def _alerts(deadline: Any) -> list[Any]:
    return deadline if isinstance(deadline, list) else [deadline]
