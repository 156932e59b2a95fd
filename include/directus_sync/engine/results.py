"""What each step of a sync run delivers, as typed results, and what a run's results add up to.

A step's result is its task's XCom return value (``model_dump(mode="json")``), which the factory passes to
the next steps and to ``record_run`` and ``notify_on_failure`` as TaskFlow arguments; they validate it back
with :func:`parse`. A step that fails still delivers a result: :class:`Failed`, its safe error text and
whatever it finished before failing (an apply step's partial counts, an event-mode run's window and plan),
which :func:`directus_sync.airflow.failures.errors_recorded` pushes as the task's return value before the task fails.
A step that never ran, was skipped or was killed delivers nothing: Airflow hands ``None`` for its result.

Like every XCom of the DAG they carry counts, paths, windows, keys and safe error texts, never item contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from directus_sync.engine.apply import Action
from directus_sync.engine.extract import ChangeManifest
from directus_sync.engine.plan import SyncPlan


class WindowRecord(BaseModel):
    """The window a run read, as the ledger records it (``start`` is None for a full copy)."""

    start: datetime | None = None
    end: datetime
    full: bool = False
    full_reason: str | None = None
    # The activity cursor the next run reads on from, if the run succeeds (see engine/cursor.py).
    cursor: dict[str, Any] | None = None
    # Whether it started at the event watermark, which a successful event-mode run advances to ``end``
    # (not in a backfill's or the reconcile DAG's runs: see airflow.watermark.uses_event_window).
    event_window: bool = False


class Extracted(BaseModel):
    """``extract_changes``: the manifest of the staged changes and the window they came from."""

    step: Literal["extracted"] = "extracted"
    manifest: ChangeManifest
    window: WindowRecord
    # The fingerprint of the row the run was built from (RemoteSource.fingerprint); later steps compare.
    row: str = ""


class Planned(BaseModel):
    """``filter_schema``: the plan of the run's writes, or in a dry run the plan's summary instead."""

    step: Literal["planned"] = "planned"
    plan: SyncPlan | None = None
    dry_run: dict[str, Any] | None = None
    row: str = ""


class Applied(BaseModel):
    """``apply_deletes``, ``apply_updates`` or ``apply_creates``: what it wrote, per collection."""

    step: Literal["applied"] = "applied"
    action: Action
    written: dict[str, int] = Field(default_factory=dict)


StepResult = Annotated[Extracted | Planned | Applied, Field(discriminator="step")]


class Synced(BaseModel):
    """``sync_changes`` of an event-mode DAG: the results of the steps it ran in one task."""

    step: Literal["synced"] = "synced"
    steps: list[StepResult] = Field(default_factory=list)


class Failed(BaseModel):
    """A step that failed: its task, its safe error text and what it delivered before it failed."""

    step: Literal["failed"] = "failed"
    task: str
    error: str
    delivered: list[StepResult] = Field(default_factory=list)


TaskResult = Annotated[Extracted | Planned | Applied | Synced | Failed, Field(discriminator="step")]
_TASK_RESULT: TypeAdapter[Extracted | Planned | Applied | Synced | Failed] = TypeAdapter(TaskResult)


def parse(value: Mapping[str, Any] | None) -> Extracted | Planned | Applied | Synced | Failed | None:
    """A task's result as its XCom return value holds it; None when the task delivered nothing."""
    return None if value is None else _TASK_RESULT.validate_python(value)


def dump(result: BaseModel) -> dict[str, Any]:
    """``result`` as the JSON a task returns into XCom."""
    return result.model_dump(mode="json")


@dataclass
class RunOutcome:
    """What the results of a run's sync tasks add up to, for the ledger and the failure report."""

    delivered: list[Extracted | Planned | Applied] = field(default_factory=list)
    failures: list[Failed] = field(default_factory=list)
    missing: int = 0  # tasks that delivered nothing: not run, skipped, or killed

    @classmethod
    def of(cls, results: Iterable[Mapping[str, Any] | None]) -> RunOutcome:
        outcome = cls()
        for result in map(parse, results):
            match result:
                case None:
                    outcome.missing += 1
                case Failed():
                    outcome.failures.append(result)
                    outcome.delivered += result.delivered
                case Synced():
                    outcome.delivered += result.steps
                case _:
                    outcome.delivered.append(result)
        return outcome

    @property
    def succeeded(self) -> bool:
        """Whether every sync task delivered its result."""
        return not self.missing and not self.failures

    @property
    def errors(self) -> dict[str, str]:
        """The failed tasks' safe error texts, by task id, in the order of the results."""
        return {f.task: f.error for f in self.failures}

    @property
    def window(self) -> WindowRecord | None:
        return next((r.window for r in self.delivered if isinstance(r, Extracted)), None)

    @property
    def plan(self) -> SyncPlan | None:
        return next((r.plan for r in self.delivered if isinstance(r, Planned) and r.plan), None)

    def written(self, action: Action) -> dict[str, int]:
        return next((r.written for r in self.delivered if isinstance(r, Applied) and r.action == action), {})
