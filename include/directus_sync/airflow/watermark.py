"""The windows of event-mode runs, chained through a watermark in the activity asset's state store.

Asset-triggered runs have no logical date and no data interval, so they cannot chain their windows through
Airflow's ``prev_*_success`` context values. The chain is kept in the asset's state store instead (Airflow's
own per-asset key/value store, reachable from tasks and from the trigger): ``synced_until`` is the end of
the last successful run's window, written when a run has applied everything; each event-mode run reads
``(synced_until - overlap, run start)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pendulum

from directus_sync.airflow.schedule import asset_name
from directus_sync.config import RemoteSource

if TYPE_CHECKING:
    from directus_sync.engine.extract import Window

log = logging.getLogger(__name__)

WATERMARK_KEY = "synced_until"


def uses_event_window(remote: RemoteSource, context: Mapping[str, Any]) -> bool:
    """Whether this run chains its window through the watermark: a run of an event-mode sync DAG.

    Backfill runs keep their data intervals (they replay a stated period, not "everything since"), and so
    does the reconcile DAG, whose full copies run beside the sync DAG and must not move its watermark.
    """
    return (remote.listens_to_events and context["dag"].dag_id == remote.dag_id
            and "backfill" not in str(context["dag_run"].run_type).lower())


def event_window(remote: RemoteSource, context: Mapping[str, Any], synced_until: datetime | None,
                 full_resync: bool = False) -> Window:
    """``(synced_until - overlap, run start)``; a full copy when nothing was synced yet or when asked.

    Every run of an event-mode DAG, event or schedule, reads from the same watermark, so a safety-net
    schedule beside the events reads only what no event run has read, and no span is read twice.
    """
    from directus_sync.engine.extract import compute_window

    return compute_window(interval_start=None, interval_end=run_start(context), prev_success_end=synced_until,
                          overlap=remote.overlap, full_resync=full_resync)


def run_start(context: Mapping[str, Any]) -> datetime:
    """When the run started: later activity belongs to the next run, which the trigger fires for it."""
    started = getattr(context["dag_run"], "start_date", None)
    return pendulum.instance(started) if started else datetime.now(UTC)


def load_watermark(remote: RemoteSource) -> datetime | None:
    """The end of the last successful run's window, from the activity asset's state store."""
    value = _state_store(remote).get(WATERMARK_KEY)
    return pendulum.parse(str(value)) if value else None  # type: ignore[return-value]


def mark_synced(remote: RemoteSource, window_end: datetime) -> None:
    """Advance ``synced_until`` to ``window_end``, the end of the window this run read, once every write of
    the run succeeded.

    Runs are serial (``max_active_runs=1``), so the watermark only moves forward; a failed run leaves it
    where it was and the next run reads from there.
    """
    end = window_end.isoformat()
    _state_store(remote).set(WATERMARK_KEY, end)
    log.info("Remote %s: synced until %s", remote.name, end)


def _state_store(remote: RemoteSource) -> Any:
    # No public path: context["asset_state_store"] holds a task's inlets and outlets only, and the activity
    # asset (the DAG's schedule) is neither of the extract and record tasks that read and advance the watermark.
    from airflow.sdk.execution_time.context import AssetStateStoreAccessor

    return AssetStateStoreAccessor(name=asset_name(remote))
