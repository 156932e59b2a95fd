"""Event mode's one task: every step in order, then the watermark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from directus_sync.config import RemoteSource

from .rows import remote

# -- the one-task sync of event-mode DAGs ----------------------------------------------------------------


GONE = "s3://nowhere@bucket/never-written"
WINDOW_END = datetime(2026, 11, 28, 11, tzinfo=UTC)


@dataclass
class Steps:
    """What run_sync called, in order, the actions whose writes the remote refuses, and the watermark set."""

    done: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    synced_until: list[datetime] = field(default_factory=list)
    event_window: bool = True  # whether the extraction read from the watermark (not in a backfill)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Steps:
    """Replace the task bodies run_sync chains with recorders."""
    from directus_sync.airflow import event_task, failures, steps
    from directus_sync.engine.extract import ChangeManifest
    from directus_sync.engine.plan import SyncPlan
    from directus_sync.engine.results import Applied, Extracted, Planned, WindowRecord

    record = Steps()
    planned = Planned(plan=SyncPlan(run_folder=GONE, window="w", collections=[]))

    def apply_writes(remote: RemoteSource, plan: Planned, action: Any, context: Any) -> Applied:
        assert plan is planned
        record.done.append(action)
        applied = Applied(action=action, written={"articles": 1})
        if action in record.refuse:
            raise failures.PoisonItemsError(f"refused {action}", delivered=[applied])
        return applied

    def extract_changes(remote: RemoteSource, context: Any) -> Extracted:
        record.done.append("extract")
        return Extracted(manifest=ChangeManifest(run_folder=GONE, window="w", full=False, collections=[]),
                         window=WindowRecord(end=WINDOW_END, event_window=record.event_window))

    def filter_schema(remote: RemoteSource, extracted: Extracted, context: Any) -> Planned:
        assert extracted.window.end == WINDOW_END
        record.done.append("plan")
        return planned

    monkeypatch.setattr(steps, "extract_changes", extract_changes)
    monkeypatch.setattr(steps, "filter_schema", filter_schema)
    monkeypatch.setattr(steps, "apply_writes", apply_writes)
    monkeypatch.setattr(steps, "cleanup_staging", lambda context: record.done.append("cleanup"))

    @contextlib.contextmanager
    def lease_held(remote: RemoteSource, context: Any, first: bool) -> Iterator[None]:
        record.done.append(f"lease (first={first})")
        yield
        record.done.append("lease kept")

    monkeypatch.setattr(steps, "lease_held", lease_held)
    def mark_synced(remote: RemoteSource, window_end: datetime) -> None:
        record.done.append("mark_synced")
        record.synced_until.append(window_end)

    monkeypatch.setattr(event_task.watermark, "mark_synced", mark_synced)
    return record


def test_one_task_runs_every_step_in_order_and_then_advances_the_watermark(recorded: Steps) -> None:
    from directus_sync.airflow.event_task import run_sync
    from directus_sync.engine.results import Applied, RunOutcome, dump

    synced = run_sync(remote(trigger="events"), {})
    assert recorded.done == ["lease (first=True)", "extract", "plan", "delete", "create", "update", "cleanup",
                          "mark_synced", "lease kept"]
    assert recorded.synced_until == [WINDOW_END]  # the end of the window the extraction read
    assert synced.steps[2:] == [Applied(action=a, written={"articles": 1}) for a in ("delete", "create", "update")]
    assert RunOutcome.of([dump(synced)]).succeeded


def test_a_run_that_did_not_read_from_the_watermark_leaves_it_alone(recorded: Steps) -> None:
    """A backfill of an event-mode DAG replays its interval: its end is no watermark."""
    from directus_sync.airflow.event_task import run_sync

    recorded.event_window = False
    run_sync(remote(trigger="events"), {})
    assert "cleanup" in recorded.done and recorded.synced_until == []


def test_refused_items_let_the_other_actions_run_and_keep_the_watermark(recorded: Steps) -> None:
    from directus_sync.airflow import failures
    from directus_sync.airflow.event_task import run_sync

    recorded.refuse.add("update")
    delivered: list[Any] = []
    with pytest.raises(failures.PoisonItemsError, match="refused update"):
        run_sync(remote(trigger="events"), {}, delivered)
    assert recorded.done == ["lease (first=True)", "extract", "plan", "delete", "create", "update"
                          ]  # no cleanup, no watermark
    # What the failure record of the task carries: the window, the plan and every action's counts.
    assert [getattr(r, "action", r.step) for r in delivered] == [
        "extracted", "planned", "delete", "create", "update"]
