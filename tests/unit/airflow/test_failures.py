"""A failing step delivers its failure record; errors no retry can fix fail the task at once, others keep
Airflow's retries."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from directus_sync.airflow.failures import PoisonItemsError, errors_recorded
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.schema import SchemaMismatch
from directus_sync.engine.results import (
    Applied,
    Failed,
)
from directus_sync.engine.staging import StagedFileError, StagingNotShared
from directus_sync.state.leases import LeaseLost

from .rows import EXTRACTED, FakeTI

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
