"""The task wrapper: errors no retry can fix fail the task at once, others keep Airflow's retries."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from directus_sync.hook import DirectusError
from directus_sync.lease import LeaseLost
from directus_sync.schema import SchemaMismatch
from directus_sync.staging import StagedFileError
from directus_sync.tasks import ERROR_XCOM_KEY, PoisonItemsError, errors_recorded


class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


PERMANENT = [
    LeaseLost("run 'a' no longer holds the lease on directus_b: run 'b' holds it since 12:00"),
    SchemaMismatch("the sync schema does not match the instances:\n- field a.x is missing on 'b'"),
    DirectusError("b", "GET", "/fields/a", 401, "Invalid user credentials."),
    DirectusError("b", "POST", "/items/a", 403, "You don't have permission to access this."),
    DirectusError("a", "GET", "/activity", 400, 'Invalid query. "limit" must be less than or equal to 100.'),
    DirectusError("b", "PATCH", "/items/a", 400, "Invalid query. Unknown field."),
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
    assert ti.xcom[ERROR_XCOM_KEY] == f"{type(error).__name__}: {error}"  # the report names what went wrong


@pytest.mark.parametrize("error", TRANSIENT_OR_DATA, ids=lambda e: type(e).__name__ + str(getattr(e, "status", "")))
def test_other_errors_keep_airflow_retries(error: Exception) -> None:
    ti = FakeTI()
    with pytest.raises(type(error)) as raised, errors_recorded({"ti": ti}):
        raise error
    assert raised.value is error
    assert not isinstance(raised.value, AirflowFailException)
    assert ERROR_XCOM_KEY in ti.xcom


def test_refused_items_still_fail_as_they_did() -> None:
    error = PoisonItemsError("the remote refused 1 items")
    with pytest.raises(PoisonItemsError) as raised, errors_recorded({"ti": FakeTI()}):
        raise error
    assert raised.value is error
