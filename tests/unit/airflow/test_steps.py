"""The window each kind of run reads, and the checks a step makes before it writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from airflow.utils.types import DagRunType
from lazy_object_proxy import Proxy

from directus_sync.airflow import steps
from directus_sync.airflow.failures import errors_recorded
from directus_sync.airflow.steps import run_window
from directus_sync.config import RemoteSource

from .rows import FakeTI, at, remote_source

# -- the window of each kind of run -----------------------------------------------------------------------
# The contexts below are what Airflow 3.3.2 gave a probe DAG on CronDataIntervalTimetable("0 * * * *")
# (checked under `airflow standalone` and `airflow dags test`, 2026-11-28): a run without a logical date
# has no logical_date, data_interval_* or prev_*_success keys at all.

def run_context(run_type: str, run_after: datetime, start: datetime, logical: datetime | None = None,
                interval: tuple[datetime, datetime] | None = None, airflow_prev: datetime | None = None,
                **params: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"dag": SimpleNamespace(dag_id="directus_sync__eu_to_us"), "params": params,
                               "dag_run": SimpleNamespace(run_type=DagRunType(run_type), run_after=run_after,
                                                          start_date=start)}
    if logical is not None:  # Airflow sets these keys only for a run with a logical date
        assert interval is not None
        context.update(logical_date=logical, data_interval_start=interval[0], data_interval_end=interval[1],
                       prev_data_interval_end_success=Proxy(lambda: airflow_prev))
    return context


HOUR_10 = (at(10), at(11))
MANUAL_RUNS = {
    # POST /api/v2/dags/{dag_id}/dagRuns with logical_date null, and `airflow dags trigger` without one
    "no logical date": run_context("manual", run_after=at(11, 26, 1), start=at(11, 26, 2)),
    # POST .../dagRuns with a logical date: the last complete interval; Airflow's previous success is
    # the run before it by logical date, whatever ran since
    "REST with a logical date": run_context("manual", run_after=at(11, 26, 2), start=at(11, 26, 2),
                                            logical=at(11, 20), interval=HOUR_10, airflow_prev=at(10)),
    # `airflow dags test DAG 2026-11-28T10:20`: its start_date is the logical date, run_after is now
    "dags test with a past date": run_context("manual", run_after=at(11, 26, 2), start=at(10, 20),
                                              logical=at(10, 20), interval=(at(9), at(10))),
    # `airflow dags test DAG`: the logical date is now
    "dags test without a date": run_context("manual", run_after=at(11, 26, 1), start=at(11, 26, 2),
                                            logical=at(11, 26, 2), interval=HOUR_10, airflow_prev=at(10)),
}


@pytest.mark.parametrize("kind", MANUAL_RUNS)
def test_a_manual_run_reads_from_the_last_successful_window_end_to_now(kind: str) -> None:
    synced_until = at(11, 10)  # a manual run at 11:10 read up to then; Airflow's context cannot know it
    window = run_window(remote_source(), MANUAL_RUNS[kind], synced_until)
    assert not window.full
    assert window.start == synced_until - timedelta(seconds=60)
    assert window.end == at(11, 26, 2)


@pytest.mark.parametrize("kind", MANUAL_RUNS)
def test_a_manual_run_of_a_remote_never_synced_copies_everything_and_full_resync_still_does(kind: str) -> None:
    never = dict(MANUAL_RUNS[kind])
    if "logical_date" in never:  # no successful run in Airflow either
        never["prev_data_interval_end_success"] = Proxy(lambda: None)
    assert run_window(remote_source(), never, None).reason == "first run"
    context = {**MANUAL_RUNS[kind], "params": {"full_resync": True}}
    assert run_window(remote_source(), context, at(11, 10)).reason == "full_resync requested"


def test_without_a_ledger_row_a_manual_run_falls_back_to_airflows_previous_success() -> None:
    window = run_window(remote_source(overlap_seconds=0), MANUAL_RUNS["REST with a logical date"], None)
    assert (window.full, window.start, window.end) == (False, at(10), at(11, 26, 2))


def test_a_scheduled_run_after_manual_ones_reads_its_interval_not_a_full_copy() -> None:
    # Its logical date (10:00) precedes the manual runs', so Airflow finds no previous success.
    context = run_context("scheduled", run_after=at(11), start=at(11, 0, 2), logical=at(10), interval=HOUR_10)
    window = run_window(remote_source(), context, at(11, 10))
    assert (window.full, window.start, window.end) == (False, at(9, 59), at(11))
    behind = run_window(remote_source(), context, at(9, 30))  # after failed runs: widened back
    assert behind.start == at(9, 29)


def test_a_backfill_keeps_its_interval_and_airflows_previous_success() -> None:
    context = run_context("backfill", run_after=at(10), start=at(11, 30), logical=at(9), interval=(at(9), at(10)),
                          airflow_prev=at(8, 30))
    window = run_window(remote_source(overlap_seconds=0), context, at(11, 10))
    assert (window.full, window.start, window.end) == (False, at(8, 30), at(10))
    first = run_context("backfill", run_after=at(10), start=at(11, 30), logical=at(9), interval=(at(9), at(10)))
    window = run_window(remote_source(overlap_seconds=0), first, at(11, 10))  # no earlier run in Airflow
    assert (window.full, window.start, window.end) == (False, at(9), at(10))
    assert run_window(remote_source(), first, None).reason == "first run"


class WindowSeen(Exception):
    """Stops extract_changes once it has computed its window."""


@pytest.fixture
def window_of(monkeypatch: pytest.MonkeyPatch) -> Any:
    """extract_changes up to its window, with ``synced_until`` in the ledger and ``watermark`` in the asset."""

    def run(remote: RemoteSource, context: dict[str, Any], synced_until: datetime | None,
            watermark: datetime | None = None) -> Any:
        def seen(source: Any, remote: RemoteSource, window: Any, *args: Any, **kwargs: Any) -> None:
            raise WindowSeen(window)

        monkeypatch.setattr(steps.tables, "engine_for", lambda: None)
        monkeypatch.setattr(steps.ledger, "open_dead_letters", lambda engine, name: {})
        monkeypatch.setattr(steps.ledger, "last_window_end", lambda engine, name: synced_until)
        monkeypatch.setattr(steps.ledger, "last_cursor", lambda engine, name: None)
        monkeypatch.setattr(steps.watermark, "load_watermark", lambda remote: watermark)
        monkeypatch.setattr(steps, "run_folder", lambda dag_id, run_id: None)
        monkeypatch.setattr(steps, "hook_for", lambda remote, conn_id: None)
        monkeypatch.setattr(steps, "synced_schema", lambda remote, source: remote)
        monkeypatch.setattr(steps, "extract", seen)
        with pytest.raises(WindowSeen) as raised:
            steps.extract_changes(remote, {**context, "ti": FakeTI(), "run_id": "r"})
        return raised.value.args[0]

    return run


def test_extract_changes_reads_a_manual_run_from_the_ledger(window_of: Any) -> None:
    window = window_of(remote_source(), MANUAL_RUNS["no logical date"], at(11, 10))
    assert (window.full, window.start, window.end) == (False, at(11, 9), at(11, 26, 2))


def test_an_event_mode_run_reads_from_its_watermark_else_from_the_ledger(window_of: Any) -> None:
    events_remote = remote_source(trigger="events")
    context = run_context("asset_triggered", run_after=at(11, 26, 1), start=at(11, 26, 2))
    assert window_of(events_remote, context, at(11, 10), watermark=at(11, 20)).start == at(11, 19)
    assert window_of(events_remote, context, at(11, 10)).start == at(11, 9)  # e.g. it ran on a schedule before
    assert window_of(events_remote, context, None).reason == "first run"


def test_a_step_built_from_another_version_of_the_row_stops_before_writing_and_fails_without_retries() -> None:
    """Workers build each task from the row as it is when it starts: a row edited mid-run must not mix."""
    from directus_sync.airflow.failures import RowChanged
    from directus_sync.airflow.steps import require_same_row

    extracted_with = remote_source().fingerprint
    require_same_row(remote_source(), extracted_with)  # unchanged: nothing to say
    require_same_row(remote_source(retries=3), "")  # a result from before fingerprints: not checked
    for edited in (remote_source(schema=[{"name": "articles", "fields": ["title", "body"]}]),
                   remote_source(remote_conn_id="directus_asia")):
        with pytest.raises(RowChanged, match="reads this run's window again"):
            require_same_row(edited, extracted_with)
    ti = FakeTI()
    with pytest.raises(AirflowFailException), errors_recorded({"ti": ti, "task": SimpleNamespace(task_id="x")}):
        require_same_row(remote_source(remote_conn_id="directus_asia"), extracted_with)
