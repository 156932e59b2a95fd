"""How a step fails: its failure record for the steps after it, the safe text of the error, and which errors
no retry can fix.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from requests import RequestException

from directus_sync.directus.errors import DirectusError
from directus_sync.directus.schema import SchemaMismatch
from directus_sync.engine.results import Failed, StepResult, dump
from directus_sync.engine.staging import StagingNotShared
from directus_sync.state import leases

log = logging.getLogger(__name__)


# A task's result in XCom: what its TaskFlow arguments downstream resolve to.
RETURN_XCOM_KEY = "return_value"


class ConfigurationError(ValueError):
    """The remote's row in the remote-sources table (or the table itself) is unusable."""


@contextlib.contextmanager
def errors_recorded(context: Mapping[str, Any]) -> Iterator[list[StepResult]]:
    """Make a failing task deliver a :class:`Failed` result, for record_run and notify_on_failure; log its time.

    The body may add to the yielded list what it finished before failing (an event-mode run's window and
    plan); an exception that carries ``delivered`` results (:class:`PoisonItemsError`: the counts an apply
    step wrote) adds them too. The result is pushed as the task's return value, which Airflow would not
    push for a failing task, so that the TaskFlow arguments of the tasks after it resolve to it.

    An error that no retry can fix (see :func:`is_permanent`) fails the task without Airflow's retries,
    so that the alert goes out now rather than after every retry's delay.
    """
    started = time.perf_counter()
    delivered: list[StepResult] = []
    try:
        yield delivered
    except Exception as exc:
        ti = context["ti"]
        failed = Failed(task=ti.task_id, error=safe_error(exc)[:4000],
                        delivered=[*delivered, *getattr(exc, "delivered", ())])
        ti.xcom_push(key=RETURN_XCOM_KEY, value=dump(failed))
        if is_permanent(exc):
            raise AirflowFailException(str(exc)) from exc  # only DirectusError and our own errors are permanent
        raise
    finally:
        log.info("directus-sync task time: %.3f s", time.perf_counter() - started)


def safe_error(exc: BaseException) -> str:
    """What may be said of ``exc`` outside the task log (XCom, the ledger, notifications, alerts).

    A :class:`DirectusError` says it safely itself (codes, collection, field, key; never an item's
    values). Other exceptions about an HTTP exchange may quote the answer, so only their kind is told.
    """
    if isinstance(exc, RequestException):
        return f"{type(exc).__name__} (see the task log)"
    return f"{type(exc).__name__}: {exc}"


# Directus's code and words for a query it refuses (a limit over QUERY_LIMIT_MAX, an unknown field in a filter...).
REFUSED_QUERY_CODE = "INVALID_QUERY"


REFUSED_QUERY_REASON = "invalid query"


def is_permanent(exc: BaseException) -> bool:
    """Whether running the task again cannot help until someone fixes the configuration.

    That is a schema that does not match the instances, staging other workers cannot read, a token
    Directus does not accept (401) or whose user lacks a permission (403), and a query the instance
    refuses (a 400 on a read, or Directus's "Invalid query"). A 400 about an item's data is not among
    them: the apply step isolates those items as dead letters.
    """
    if isinstance(exc, SchemaMismatch | leases.LeaseLost | StagingNotShared | RowChanged):
        return True
    if not isinstance(exc, DirectusError):
        return False
    return exc.status in (401, 403) or (exc.status == 400 and (
        exc.request_method == "GET" or REFUSED_QUERY_CODE in exc.codes or REFUSED_QUERY_REASON in exc.detail.lower()))


class PoisonItemsError(AirflowFailException):
    """The remote refused some items for their data; all others were written.

    Fails without Airflow's task retries: writing the same data again cannot help; every later run
    retries the dead letters first, with their source's current state. ``delivered`` holds what was
    written, for the ledger (see :func:`errors_recorded`).
    """

    def __init__(self, message: str, delivered: Sequence[StepResult] = ()) -> None:
        super().__init__(message)
        self.delivered = list(delivered)


class RowChanged(RuntimeError):
    """The remote's row changed while a run was under way: its steps were built from different versions."""
