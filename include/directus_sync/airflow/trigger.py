"""The activity trigger: watches a source's activity log from the triggerer and fires when items change.

:class:`DirectusActivityTrigger` polls the source's ``/activity`` with one small request per interval (a
keyset cursor on activity ``id``, through the async hook). When someone other than the sync user created,
updated or deleted items of the schema's collections, it fires one event. It keeps its cursor in the
activity asset's state store, so a restarted triggerer resumes where it stopped instead of firing for old
activity or missing new activity.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent  # the public path: no airflow.sdk one in 3.3

from directus_sync.directus.activity import newest_change_params

CURSOR_KEY = "activity_cursor"
# After a failed poll, wait this many intervals (doubling) before the next, at most MAX_BACKOFF_SECONDS.
MAX_BACKOFF_SECONDS = 60.0

# A fetch takes the /activity query parameters and returns Directus's ``data`` rows.
Fetch = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]


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
        rows = await fetch(newest_change_params(self.collections, self.cursor, self.exclude_user))
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

        from directus_sync.directus.async_hook import DirectusAsyncHook
        from directus_sync.directus.errors import DirectusError

        # trust_env: HTTP(S)_PROXY and NO_PROXY count here as they do for the tasks' requests sessions.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                         trust_env=True) as session:
            hook = await DirectusAsyncHook.connect(self.source_conn_id, session)
            poller = ActivityPoller(self.collections, await self._retrying(hook.current_user_id),
                                    cursor=await self._load_cursor())
            self.log.info("Watching %s on %s for remote %s from activity id %d, every %.1f s",
                          ",".join(self.collections), self.source_conn_id, self.remote, poller.cursor,
                          self.poll_interval)
            while True:
                try:
                    payload = await poller.poll(hook.activity)
                except (aiohttp.ClientError, DirectusError, TimeoutError, ValueError, KeyError) as exc:
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

        from directus_sync.directus.errors import DirectusError

        failures = 0
        while True:
            try:
                return await call()
            except (aiohttp.ClientError, DirectusError, TimeoutError, ValueError, KeyError) as exc:
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
