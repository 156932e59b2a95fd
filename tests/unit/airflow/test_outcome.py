"""What record_run and notify_on_failure make of the steps' results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.utils.types import DagRunType

from directus_sync.airflow import outcome, steps
from directus_sync.engine.plan import CollectionPlan, SyncPlan
from directus_sync.engine.results import (
    Applied,
    Failed,
    Planned,
    RunOutcome,
    Synced,
    dump,
)
from directus_sync.state import ledger, tables

from .rows import EXTRACTED, GONE, at, remote_source


def test_a_failure_report_names_the_plans_keys_without_reading_staged_files() -> None:
    """notify_on_failure may run on another worker, after the run's folder is gone: the plan in XCom says it all."""
    from directus_sync.airflow.outcome import _pending_keys
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

PLANNED = Planned(plan=SyncPlan(run_folder=GONE, window="w", collections=[CollectionPlan(
    collection="articles", pk="id", fields=["id", "title"], creates=3, updates=2, deletes=1, unchanged=5,
    conflicts=1, first_keys=["1", "2"], creates_path=GONE, updates_path=GONE, deletes_path=GONE)]))
DELETED = Applied(action="delete", written={"articles": 1})
UPDATED = Applied(action="update", written={"articles": 2})
CREATED = Applied(action="create", written={"articles": 3})


def as_xcom(*results: Any) -> list[dict[str, Any] | None]:
    """The results as the tasks' return values in XCom, as TaskFlow hands them to the next tasks."""
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
    summary = outcome.record_run(remote_source(), as_xcom(EXTRACTED, PLANNED, DELETED, UPDATED, CREATED), context)
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
    assert outcome.record_run(remote_source(), as_xcom(synced), outcome_context())["status"] == "success"


@pytest.mark.parametrize("results", [
    (EXTRACTED, PLANNED, DELETED, None, CREATED),  # apply_updates killed: nothing delivered
    (EXTRACTED, PLANNED, DELETED, UPDATED, Failed(task="apply_creates", error="PoisonItemsError: refused",
                                                   delivered=[CREATED])),
], ids=["a step delivered nothing", "a step failed"])
def test_a_run_failed_when_a_step_did_not_deliver_its_result_and_keeps_what_was_written(
        ledger_engine: sa.engine.Engine, results: tuple[Any, ...]) -> None:
    context = outcome_context()
    with pytest.raises(AirflowSkipException, match="no Asset events"):
        outcome.record_run(remote_source(), as_xcom(*results), context)
    [row] = ledger.recent_runs(ledger_engine, "eu_to_us")
    assert row["status"] == "failed" and row["activity_cursor"] is None  # the next run reads the window again
    assert row["window_end"] == at(11)
    assert (row["created"], row["updated"], row["deleted"]) == (3, 0 if results[3] is None else 2, 1)
    assert not context["outlet_events"]


def test_a_failed_runs_ledger_row_names_each_failed_step(ledger_engine: sa.engine.Engine) -> None:
    extract_failed = Failed(task="extract_changes", error="DirectusError: 401 on GET /activity")
    with pytest.raises(AirflowSkipException, match="extract_changes"):
        outcome.record_run(remote_source(), [dump(extract_failed), None, None, None, None], outcome_context())
    [row] = ledger.recent_runs(ledger_engine, "eu_to_us")
    assert row["error"] == "extract_changes: DirectusError: 401 on GET /activity"
    assert row["window_end"] is None and row["created"] == 0


def test_the_failure_report_names_the_failed_steps_and_the_plans_pending_keys(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(outcome.notify, "send", lambda hook, users, report: sent.append(report))
    monkeypatch.setattr(outcome.alerts, "send", lambda alert, channels, context: None)
    monkeypatch.setattr(outcome.alerts, "global_channels", lambda: [])
    monkeypatch.setattr(steps, "hook_for", lambda remote, conn_id: None)
    failed = Failed(task="apply_updates", error="DirectusError: 503", delivered=[])
    with pytest.raises(AirflowFailException, match="apply_updates: DirectusError: 503"):
        outcome.notify_on_failure(remote_source(), as_xcom(EXTRACTED, PLANNED, DELETED, failed, None),
                                outcome_context())
    [report] = sent
    assert report.errors == {"apply_updates": "DirectusError: 503"}
    assert report.keys == {"articles": ["1", "2"]} and report.counts == {"articles": 6}


def test_a_runs_outcome_adds_up_its_steps_results() -> None:
    run = RunOutcome.of(as_xcom(EXTRACTED, PLANNED, None, Failed(task="apply_updates", error="x",
                                                                     delivered=[UPDATED]), CREATED))
    assert not run.succeeded and run.missing == 1 and run.errors == {"apply_updates": "x"}
    assert run.window == EXTRACTED.window and run.plan == PLANNED.plan
    assert (run.written("delete"), run.written("update"), run.written("create")) == (
        {}, {"articles": 2}, {"articles": 3})
    assert RunOutcome.of(as_xcom(Synced(steps=[EXTRACTED, PLANNED]))).succeeded


def test_the_junction_behind_a_listed_alias_is_recorded_but_announces_no_asset(ledger_engine: sa.engine.Engine
                                                                                ) -> None:
    junction = CollectionPlan(collection="articles_tags", pk="id", fields=["id", "articles_id", "tags_id"],
                              creates=4, creates_path=GONE, updates_path=GONE, deletes_path=GONE)
    planned = Planned(plan=SyncPlan(run_folder=GONE, window="w", collections=[*PLANNED.plan.collections, junction]))
    created = Applied(action="create", written={"articles": 3, "articles_tags": 4})
    context = outcome_context()
    outcome.record_run(remote_source(), as_xcom(EXTRACTED, planned, DELETED, UPDATED, created), context)
    rows = {row["collection"]: row for row in ledger.recent_runs(ledger_engine, "eu_to_us")}
    assert rows["articles_tags"]["created"] == 4 and rows["articles"]["created"] == 3
    assert len(context["outlet_events"]) == 1  # the articles Asset only: the DAG declares listed collections
