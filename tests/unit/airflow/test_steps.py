"""The task wrapper (a failing step delivers its failure record; errors no retry can fix fail the task at
once, others keep Airflow's retries), the window each kind of run reads, and what record_run and
notify_on_failure make of the steps' results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.utils.types import DagRunType
from lazy_object_proxy import Proxy

from directus_sync.airflow import steps
from directus_sync.airflow.steps import RETURN_XCOM_KEY, PoisonItemsError, errors_recorded, run_window
from directus_sync.config import RemoteSource
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.schema import SchemaMismatch
from directus_sync.engine.extract import ChangeManifest
from directus_sync.engine.plan import CollectionPlan, SyncPlan
from directus_sync.engine.results import (
    Applied,
    Extracted,
    Failed,
    Planned,
    RunOutcome,
    Synced,
    WindowRecord,
    dump,
    parse,
)
from directus_sync.engine.staging import StagedFileError, StagingNotShared
from directus_sync.state import ledger, tables
from directus_sync.state.leases import LeaseLost


class FakeTI:
    def __init__(self, task_id: str = "apply_creates") -> None:
        self.task_id = task_id
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def delivered(self) -> Any:
        """The task's result as record_run and notify_on_failure get it: its return value, validated."""
        return parse(self.xcom.get(RETURN_XCOM_KEY))


PERMANENT = [
    LeaseLost("run 'a' no longer holds the lease on directus_b: run 'b' holds it since 12:00"),
    SchemaMismatch("the sync schema does not match the instances:\n- field a.x is missing on 'b'"),
    DirectusError("b", "GET", "/fields/a", 401, "Invalid user credentials."),
    DirectusError("b", "POST", "/items/a", 403, "You don't have permission to access this."),
    DirectusError("a", "GET", "/activity", 400, 'Invalid query. "limit" must be less than or equal to 100.'),
    DirectusError("b", "PATCH", "/items/a", 400, "Invalid query. Unknown field."),
    StagingNotShared("staging is on this machine's disk (file:///x), but the executor (CeleryExecutor) may..."),
]
TRANSIENT_OR_DATA = [
    DirectusError("b", "GET", "/items/a", 503, "Service Unavailable"),
    DirectusError("b", "GET", "/items/a", None, "Connection refused"),
    DirectusError("b", "POST", "/items/a", 400, 'Value for field "title" in collection "a" is too long.'),
    StagedFileError("the staged file file:///x/a.upserts.jsonl does not exist"),
]


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__ + str(getattr(e, "status", "")))
def test_errors_no_retry_can_fix_fail_the_task_without_retries(error: Exception) -> None:
    ti = FakeTI()
    with pytest.raises(AirflowFailException) as raised, errors_recorded({"ti": ti}):
        raise error
    assert str(raised.value) == str(error)
    assert raised.value.__cause__ is error
    # The step still delivers a result: its failure record, which names what went wrong.
    assert ti.delivered() == Failed(task="apply_creates", error=f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("error", TRANSIENT_OR_DATA, ids=lambda e: type(e).__name__ + str(getattr(e, "status", "")))
def test_other_errors_keep_airflow_retries(error: Exception) -> None:
    ti = FakeTI()
    with pytest.raises(type(error)) as raised, errors_recorded({"ti": ti}):
        raise error
    assert raised.value is error
    assert not isinstance(raised.value, AirflowFailException)
    assert isinstance(ti.delivered(), Failed)


def test_refused_items_still_fail_as_they_did_and_their_failure_keeps_what_was_written() -> None:
    written = Applied(action="create", written={"articles": 7})
    error = PoisonItemsError("the remote refused 1 items", delivered=[written])
    ti = FakeTI()
    with pytest.raises(PoisonItemsError) as raised, errors_recorded({"ti": ti}):
        raise error
    assert raised.value is error
    assert ti.delivered() == Failed(task="apply_creates", error=f"PoisonItemsError: {error}", delivered=[written])


def test_a_failing_task_delivers_what_it_finished_before_failing() -> None:
    """An event-mode run's one task: its window and plan still reach the ledger when a later step fails."""
    ti = FakeTI("sync_changes")
    with pytest.raises(RuntimeError), errors_recorded({"ti": ti}) as delivered:
        delivered.append(EXTRACTED)
        raise RuntimeError("the remote is down")
    assert ti.delivered() == Failed(task="sync_changes", error="RuntimeError: the remote is down",
                                    delivered=[EXTRACTED])


def test_a_successful_task_pushes_nothing_itself() -> None:
    """Airflow pushes its return value; the wrapper only adds a failure record."""
    ti = FakeTI()
    with errors_recorded({"ti": ti}):
        pass
    assert ti.xcom == {}


# -- the window of each kind of run -----------------------------------------------------------------------
# The contexts below are what Airflow 3.3.2 gave a probe DAG on CronDataIntervalTimetable("0 * * * *")
# (checked under `airflow standalone` and `airflow dags test`, 2026-11-28): a run without a logical date
# has no logical_date, data_interval_* or prev_*_success keys at all.

def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 28, hour, minute, second, tzinfo=UTC)


def remote_source(**row: Any) -> RemoteSource:
    return RemoteSource.model_validate({
        "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
        "schema": [{"name": "articles", "fields": ["title"]}], **row})


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
    from directus_sync.airflow import steps

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


def test_a_failure_report_names_the_plans_keys_without_reading_staged_files() -> None:
    """notify_on_failure may run on another worker, after the run's folder is gone: the plan in XCom says it all."""
    from directus_sync.airflow.steps import _pending_keys
    from directus_sync.engine.plan import CollectionPlan, SyncPlan

    gone = "s3://nowhere@bucket/never-written"
    planned = CollectionPlan(collection="a", pk="id", fields=["id"], creates=30, deletes=2, first_keys=["1", "2"],
                             creates_path=gone, updates_path=gone, deletes_path=gone)
    keys, counts = _pending_keys(SyncPlan(run_folder=gone, window="w", collections=[planned]))
    assert keys == {"a": ["1", "2"]} and counts == {"a": 32}


# -- what record_run and notify_on_failure make of the steps' results ---------------------------------------
# The factory passes them every sync step's result, in order (extract_changes, filter_schema, apply_deletes,
# apply_updates, apply_creates; or sync_changes alone): a step's return value in XCom, its failure record
# when it failed, None when it never ran, was skipped or was killed.

GONE = "s3://nowhere@bucket/never-written"
EXTRACTED = Extracted(
    manifest=ChangeManifest(run_folder=GONE, window="w", full=False, collections=[]),
    window=WindowRecord(start=at(9, 59), end=at(11), cursor={"activity_id": 42}))
PLANNED = Planned(plan=SyncPlan(run_folder=GONE, window="w", collections=[CollectionPlan(
    collection="articles", pk="id", fields=["id", "title"], creates=3, updates=2, deletes=1, unchanged=5,
    conflicts=1, first_keys=["1", "2"], creates_path=GONE, updates_path=GONE, deletes_path=GONE)]))
DELETED = Applied(action="delete", written={"articles": 1})
UPDATED = Applied(action="update", written={"articles": 2})
CREATED = Applied(action="create", written={"articles": 3})


def as_xcom(*results: Any) -> list[dict[str, Any] | None]:
    """The results as the tasks' return values in XCom, as TaskFlow hands them to the next steps."""
    return [None if r is None else dump(r) for r in results]


@pytest.fixture
def ledger_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    monkeypatch.setattr(steps.tables, "engine_for", lambda conn_id=None: engine)
    return engine


class Outlets(dict[Any, Any]):
    def __missing__(self, asset: Any) -> Any:
        self[asset] = SimpleNamespace(extra=None)
        return self[asset]


def outcome_context(**params: Any) -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id="directus_sync__eu_to_us"), "run_id": "scheduled__1", "params": params,
            "dag_run": SimpleNamespace(run_type=DagRunType("scheduled"), start_date=at(11, 0, 2)),
            "outlet_events": Outlets()}


def test_a_run_succeeded_when_every_step_delivered_its_result(ledger_engine: sa.engine.Engine) -> None:
    context = outcome_context()
    summary = steps.record_run(remote_source(), as_xcom(EXTRACTED, PLANNED, DELETED, UPDATED, CREATED), context)
    assert summary == {"status": "success", "written": {"articles": 6}}
    [row] = ledger.recent_runs(ledger_engine, "eu_to_us")
    assert row["status"] == "success" and row["error"] is None
    assert (row["created"], row["updated"], row["deleted"], row["skipped"], row["conflicts"]) == (3, 2, 1, 5, 1)
    assert row["window_end"] == at(11) and row["activity_cursor"] == {"activity_id": 42}
    [event] = context["outlet_events"].values()
    assert event.extra == {"created": 3, "updated": 2, "deleted": 1, "skipped": 5,
                           "window_end": "2026-11-28T11:00:00+00:00", "run_id": "scheduled__1"}


def test_an_event_mode_run_is_recorded_from_its_one_tasks_steps(ledger_engine: sa.engine.Engine) -> None:
    synced = Synced(steps=[EXTRACTED, PLANNED, DELETED, UPDATED, CREATED])
    assert steps.record_run(remote_source(), as_xcom(synced), outcome_context())["status"] == "success"


@pytest.mark.parametrize("results", [
    (EXTRACTED, PLANNED, DELETED, None, CREATED),  # apply_updates killed: nothing delivered
    (EXTRACTED, PLANNED, DELETED, UPDATED, Failed(task="apply_creates", error="PoisonItemsError: refused",
                                                   delivered=[CREATED])),
], ids=["a step delivered nothing", "a step failed"])
def test_a_run_failed_when_a_step_did_not_deliver_its_result_and_keeps_what_was_written(
        ledger_engine: sa.engine.Engine, results: tuple[Any, ...]) -> None:
    context = outcome_context()
    with pytest.raises(AirflowSkipException, match="no Asset events"):
        steps.record_run(remote_source(), as_xcom(*results), context)
    [row] = ledger.recent_runs(ledger_engine, "eu_to_us")
    assert row["status"] == "failed" and row["activity_cursor"] is None  # the next run reads the window again
    assert row["window_end"] == at(11)
    assert (row["created"], row["updated"], row["deleted"]) == (3, 0 if results[3] is None else 2, 1)
    assert not context["outlet_events"]


def test_a_failed_runs_ledger_row_names_each_failed_step(ledger_engine: sa.engine.Engine) -> None:
    extract_failed = Failed(task="extract_changes", error="DirectusError: 401 on GET /activity")
    with pytest.raises(AirflowSkipException, match="extract_changes"):
        steps.record_run(remote_source(), [dump(extract_failed), None, None, None, None], outcome_context())
    [row] = ledger.recent_runs(ledger_engine, "eu_to_us")
    assert row["error"] == "extract_changes: DirectusError: 401 on GET /activity"
    assert row["window_end"] is None and row["created"] == 0


def test_the_failure_report_names_the_failed_steps_and_the_plans_pending_keys(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(steps.notify, "send", lambda hook, users, report: sent.append(report))
    monkeypatch.setattr(steps.alerts, "send", lambda alert, channels, context: None)
    monkeypatch.setattr(steps.alerts, "global_channels", lambda: [])
    monkeypatch.setattr(steps, "hook_for", lambda remote, conn_id: None)
    failed = Failed(task="apply_updates", error="DirectusError: 503", delivered=[])
    with pytest.raises(AirflowFailException, match="apply_updates: DirectusError: 503"):
        steps.notify_on_failure(remote_source(), as_xcom(EXTRACTED, PLANNED, DELETED, failed, None),
                                outcome_context())
    [report] = sent
    assert report.errors == {"apply_updates": "DirectusError: 503"}
    assert report.keys == {"articles": ["1", "2"]} and report.counts == {"articles": 6}


def test_a_runs_outcome_adds_up_its_steps_results() -> None:
    outcome = RunOutcome.of(as_xcom(EXTRACTED, PLANNED, None, Failed(task="apply_updates", error="x",
                                                                     delivered=[UPDATED]), CREATED))
    assert not outcome.succeeded and outcome.missing == 1 and outcome.errors == {"apply_updates": "x"}
    assert outcome.window == EXTRACTED.window and outcome.plan == PLANNED.plan
    assert (outcome.written("delete"), outcome.written("update"), outcome.written("create")) == (
        {}, {"articles": 2}, {"articles": 3})
    assert RunOutcome.of(as_xcom(Synced(steps=[EXTRACTED, PLANNED]))).succeeded


def test_a_step_built_from_another_version_of_the_row_stops_before_writing_and_fails_without_retries() -> None:
    """Workers build each task from the row as it is when it starts: a row edited mid-run must not mix."""
    from directus_sync.airflow.steps import RowChanged, require_same_row

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
