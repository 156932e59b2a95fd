"""Event-driven runs: a trigger that watches a source's activity log, and the windows of the runs it starts.

A remote whose ``trigger`` is ``events`` (or ``both``) is scheduled on an Asset of its own, the source's
activity as seen by this remote. The asset has an :class:`~airflow.sdk.AssetWatcher` whose trigger,
:class:`DirectusActivityTrigger`, runs in the triggerer and polls the source's ``/activity`` with one small
request per interval (a keyset cursor on activity ``id``). When someone other than the sync user created,
updated or deleted items of the schema's collections, it fires one event; Airflow turns it into a run.

Coalescing comes from Airflow itself: the sync DAG has ``max_active_runs=1``, and the scheduler does not
create an asset-triggered run while one is active, so every event fired during a run is consumed by one
next run. A bulk import of thousands of items therefore causes a few runs, not one per item.

Asset-triggered runs have no logical date and no data interval, so they cannot chain their windows through
Airflow's ``prev_*_success`` context values. The chain is kept in the asset's state store instead (Airflow's
own per-asset key/value store, reachable from tasks and from the trigger): ``synced_until`` is the end of
the last successful run's window, written when a run has applied everything; each event-mode run reads
``(synced_until - overlap, run start)``. The trigger keeps its cursor there too, so a restarted triggerer
resumes where it stopped instead of firing for old activity or missing new activity.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronDataIntervalTimetable
from airflow.triggers.base import BaseEventTrigger, TriggerEvent  # the public path: no airflow.sdk one in 3.3

from directus_sync.config import RemoteSource, TriggerMode

if TYPE_CHECKING:
    # Imported where they are used (the triggerer's polls, a run's window): parsing the DAG file, which
    # imports this module, then never loads aiohttp or the HTTP provider (a quarter of a second).

    from directus_sync.engine.extract import Window

log = logging.getLogger(__name__)

ASSET_SCHEME = "x-directus-activity"  # "x-" schemes are left alone by Airflow's URI normalisation
CURSOR_KEY = "activity_cursor"
WATERMARK_KEY = "synced_until"
ITEM_ACTIONS = ("create", "update", "delete")
# After a failed poll, wait this many intervals (doubling) before the next, at most MAX_BACKOFF_SECONDS.
MAX_BACKOFF_SECONDS = 60.0

# A fetch takes the /activity query parameters and returns Directus's ``data`` rows.
Fetch = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]


# -- the schedule -----------------------------------------------------------------------------------------


def activity_asset(remote: RemoteSource) -> Asset:
    """The asset standing for the source's activity as ``remote`` sees it, watched by the trigger.

    One asset per remote (not per source), so that each remote's trigger has one cursor and each event
    starts exactly one DAG. Its URI names a connection id and the remote's name, never a URL.
    """
    trigger = DirectusActivityTrigger(source_conn_id=remote.source_conn_id, collections=remote.collections,
                                      remote=remote.name, poll_interval=remote.event_poll_seconds)
    return Asset(name=asset_name(remote),
                 uri=f"{ASSET_SCHEME}://{remote.source_conn_id}/{remote.name}",
                 group="directus-sync",
                 watchers=[AssetWatcher(name=f"{remote.dag_id}__activity_watcher", trigger=trigger)])


def asset_for(remote: RemoteSource, collection: str) -> Asset:
    """The Asset a successful run updates: one collection on the remote, named by the remote's connection."""
    uri = f"directus://{remote.remote_conn_id}/{collection}"
    return Asset(uri=uri, name=uri, group="directus-sync")


def asset_name(remote: RemoteSource) -> str:
    """The activity asset's name: the DAG's trigger and its tasks share its state store through it."""
    return f"{remote.dag_id}__source_activity"


def schedule_for(remote: RemoteSource) -> Any:
    """The DAG ``schedule`` of a remote: its cron, its activity asset, or the asset with the cron beside it."""
    cron = CronDataIntervalTimetable(remote.cron, timezone="UTC")
    if remote.trigger is TriggerMode.SCHEDULE:
        return cron
    if remote.trigger is TriggerMode.EVENTS:
        return [activity_asset(remote)]
    return AssetOrTimeSchedule(timetable=cron, assets=activity_asset(remote))


# -- the windows of event-mode runs -----------------------------------------------------------------------


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


# -- polling ----------------------------------------------------------------------------------------------


def newest_activity_params(collections: Sequence[str], after_id: int, exclude_user: str | None) -> dict[str, Any]:
    """``/activity`` query for the newest item change after ``after_id`` not made by ``exclude_user``.

    One row at most, sorted by ``id`` descending: the cheapest question that both says "something
    happened" and gives the new cursor.
    """
    clauses: list[dict[str, Any]] = [
        {"id": {"_gt": after_id}},
        {"collection": {"_in": list(collections)}},
        {"action": {"_in": list(ITEM_ACTIONS)}},
    ]
    if exclude_user:
        # _neq alone would also drop rows without a user (flows, scripts): SQL three-valued logic.
        clauses.append({"_or": [{"user": {"_neq": exclude_user}}, {"user": {"_null": True}}]})
    return {"filter": json.dumps({"_and": clauses}), "sort": "-id", "limit": 1, "fields": "id,timestamp"}


@dataclass
class ActivityPoller:
    """The trigger's polling state: the cursor and the backoff after failures, without any I/O.

    :param collections: the schema's collections.
    :param exclude_user: the source sync user, whose writes are other remotes' syncs (echo suppression).
    :param cursor: the id of the newest activity already announced; ``0`` announces all past activity once.
    """

    collections: Sequence[str]
    exclude_user: str | None
    cursor: int = 0
    failures: int = field(default=0)

    async def poll(self, fetch: Fetch) -> dict[str, Any] | None:
        """Ask once; return an event payload when there is new activity (and move the cursor past it)."""
        rows = await fetch(newest_activity_params(self.collections, self.cursor, self.exclude_user))
        self.failures = 0
        if not rows:
            return None
        newest = int(rows[0]["id"])
        if newest <= self.cursor:  # a source that answers out of order must not move the cursor back
            return None
        payload = {"after_id": self.cursor, "newest_id": newest, "newest_at": rows[0].get("timestamp")}
        self.cursor = newest
        return payload

    def delay(self, interval: float) -> float:
        """Seconds until the next poll: the interval, or a growing backoff after consecutive failures."""
        if not self.failures:
            return interval
        return min(interval * 2 ** self.failures, max(MAX_BACKOFF_SECONDS, interval))


class DirectusActivityTrigger(BaseEventTrigger):
    """Fires when the source's activity log has new item changes on the collections, by anyone but the
    sync user.

    Serialized kwargs are connection ids and names only: the URL and token are read from the Airflow
    connection in the triggerer.

    :param source_conn_id: the Airflow connection of the source instance.
    :param collections: the collections to watch.
    :param remote: the remote's name (one trigger, and one cursor, per remote).
    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait for one answer.
    """

    def __init__(self, source_conn_id: str, collections: Sequence[str], remote: str, poll_interval: float = 2.0,
                 timeout: float = 30.0) -> None:
        super().__init__()
        self.source_conn_id = source_conn_id
        self.collections = list(collections)
        self.remote = remote
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"source_conn_id": self.source_conn_id, "collections": self.collections, "remote": self.remote,
                 "poll_interval": self.poll_interval, "timeout": self.timeout})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll forever; yield one event per poll that finds new activity. Failures back off, never stop."""
        import aiohttp

        from directus_sync.directus.hook import (
            DirectusAsyncClient,  # the Directus protocol, loaded in the triggerer only
        )

        # trust_env: HTTP(S)_PROXY and NO_PROXY count here as they do for the tasks' requests sessions.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                         trust_env=True) as session:
            client = await DirectusAsyncClient.connect(self.source_conn_id, session)
            poller = ActivityPoller(self.collections, await self._retrying(client.current_user_id),
                                    cursor=await self._load_cursor())
            self.log.info("Watching %s on %s for remote %s from activity id %d, every %.1f s",
                          ",".join(self.collections), self.source_conn_id, self.remote, poller.cursor,
                          self.poll_interval)
            while True:
                try:
                    payload = await poller.poll(client.activity)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    poller.failures += 1
                    self.log.warning("Polling %s failed (%d in a row): %s", self.source_conn_id, poller.failures,
                                     exc)
                    payload = None
                if payload:
                    yield TriggerEvent({"remote": self.remote, **payload})
                    await self._save_cursor(poller.cursor)  # after the event is handed over, never before
                await asyncio.sleep(poller.delay(self.poll_interval))

    async def _retrying(self, call: Callable[[], Awaitable[str]]) -> str:
        """The sync user's id, waiting for the source to answer; without it every echo would fire."""
        import aiohttp

        failures = 0
        while True:
            try:
                return await call()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                failures += 1
                self.log.warning("Cannot reach %s yet (%d): %s", self.source_conn_id, failures, exc)
                await asyncio.sleep(min(self.poll_interval * 2 ** failures, MAX_BACKOFF_SECONDS))

    async def _load_cursor(self) -> int:
        if self.asset_state_store is None:  # not started by the triggerer for an asset (tests, deferral)
            return 0
        value = await self.asset_state_store.aget(CURSOR_KEY)
        return int(value) if value is not None else 0  # type: ignore[arg-type]

    async def _save_cursor(self, cursor: int) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(CURSOR_KEY, cursor)


