"""The windows of event-mode runs, chained through the watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from directus_sync.airflow.watermark import event_window, uses_event_window

from .rows import remote

# -- windows -------------------------------------------------------------------------------------------


def context(run_type: str = "asset_triggered", dag_id: str = "directus_sync__eu_to_us",
            start: datetime | None = None) -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id=dag_id),
            "dag_run": SimpleNamespace(run_type=run_type, start_date=start or datetime(2026, 11, 26, 12, tzinfo=UTC))}


def test_an_event_run_reads_from_the_last_synced_end_minus_overlap_to_its_own_start() -> None:
    synced = datetime(2026, 11, 26, 11, 59, 30, tzinfo=UTC)
    window = event_window(remote(trigger="events"), context(), synced)
    assert not window.full
    assert window.start == synced - timedelta(seconds=60)
    assert window.end == datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_consecutive_event_runs_leave_no_gap() -> None:
    config = remote(trigger="both", overlap_seconds=0)
    first = event_window(config, context(start=datetime(2026, 11, 26, 12, tzinfo=UTC)), None)
    second = event_window(config, context("scheduled", start=datetime(2026, 11, 26, 12, 0, 9, tzinfo=UTC)),
                          first.end)
    assert first.full  # nothing synced yet: a full copy as of the run's start
    assert second.start == first.end


def test_full_resync_is_honoured_in_event_mode() -> None:
    assert event_window(remote(trigger="events"), context(), datetime.now(UTC), full_resync=True).full


def test_backfills_the_reconcile_dag_and_schedule_mode_keep_their_interval_windows() -> None:
    events = remote(trigger="events")
    assert uses_event_window(events, context("asset_triggered"))
    assert uses_event_window(events, context("scheduled"))
    assert uses_event_window(events, context("manual"))
    assert not uses_event_window(events, context("backfill"))
    assert not uses_event_window(events, context(dag_id=events.reconcile_dag_id))
    assert not uses_event_window(remote(), context("asset_triggered"))
