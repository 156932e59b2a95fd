"""The schedules of the sync DAGs: a cron, the source's activity (an Asset watched by the trigger), or both.

A remote whose ``trigger`` is ``events`` (or ``both``) is scheduled on an Asset of its own, the source's
activity as seen by this remote. The asset has an :class:`~airflow.sdk.AssetWatcher` whose trigger
(:mod:`.trigger`) fires when someone changes items; Airflow turns each event into a run.

Coalescing comes from Airflow itself: the sync DAG has ``max_active_runs=1``, and the scheduler does not
create an asset-triggered run while one is active, so every event fired during a run is consumed by one
next run. A bulk import of thousands of items therefore causes a few runs, not one per item.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronDataIntervalTimetable

from directus_sync.airflow.trigger import DirectusActivityTrigger
from directus_sync.config import RemoteSource, TriggerMode

ASSET_SCHEME = "x-directus-activity"  # "x-" schemes are left alone by Airflow's URI normalisation


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
