"""The schedules of sync DAGs: cron, the activity asset, or both."""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable

from directus_sync.airflow.factory import build_sync_dag
from directus_sync.airflow.schedule import activity_asset, schedule_for
from directus_sync.config import TriggerMode, parse_row

from .rows import remote

# -- configuration and schedule ----------------------------------------------------------------------


def test_trigger_defaults_to_schedule_and_rejects_unknown_modes() -> None:
    assert remote().trigger is TriggerMode.SCHEDULE
    assert remote(trigger=None, event_poll_seconds=None).event_poll_seconds == 2.0
    assert remote(trigger="both").listens_to_events
    broken = parse_row({"name": "x", "source_conn_id": "a", "remote_conn_id": "b",
                        "schema": [{"name": "c", "fields": ["f"]}], "trigger": "webhook"})
    assert broken.status == "broken"
    assert "trigger" in broken.error  # type: ignore[union-attr]


def test_each_mode_gets_its_schedule() -> None:
    assert isinstance(schedule_for(remote()), CronDataIntervalTimetable)
    events_dag = build_sync_dag(remote(trigger="events"))
    assert type(events_dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert events_dag.max_active_runs == 1  # what makes Airflow coalesce events into the next run
    assert set(events_dag.task_ids) == {"sync_changes", "record_run", "notify_on_failure"}
    assert events_dag.get_task("record_run").upstream_task_ids == {"sync_changes"}
    assert events_dag.get_task("notify_on_failure").upstream_task_ids == {"sync_changes"}
    for outcome_task in ("record_run", "notify_on_failure"):  # they read the one task's result
        assert [a.operator.task_id for a in events_dag.get_task(outcome_task).op_args] == ["sync_changes"]
    both = schedule_for(remote(trigger="both", schedule="@hourly"))
    assert isinstance(both, AssetOrTimeSchedule)
    assert isinstance(both.timetable, CronDataIntervalTimetable)
    assert build_sync_dag(remote(trigger="both"), reconcile=True).timetable.__class__ is CronDataIntervalTimetable


def test_the_activity_asset_names_the_connection_not_the_url() -> None:
    asset = activity_asset(remote(trigger="events", event_poll_seconds=0.5))
    assert asset.uri == "x-directus-activity://directus_eu/eu_to_us"
    assert asset.name == "directus_sync__eu_to_us__source_activity"
    assert asset.watchers[0].trigger.poll_interval == 0.5  # type: ignore[attr-defined]
