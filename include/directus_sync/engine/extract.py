"""Change extraction: which items of the source changed in a window, and their newest state.

The source's activity log says *which* keys changed; the items themselves say *what* they are now. So a
replayed or out-of-order run always writes the newest state, and a key that no longer exists on the
source is a delete whatever the log says last happened to it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel

from directus_sync.config import CollectionSchema, RemoteSource
from directus_sync.directus.activity import iso_timestamp, parse_timestamp
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.paging import sized_batches
from directus_sync.directus.schema import CollectionShape, shape_of
from directus_sync.engine import cursor
from directus_sync.engine.cursor import ActivityCursor
from directus_sync.engine.readahead import READ_AHEAD, read_ahead
from directus_sync.engine.staging import JsonlWriter, write_jsonl

log = logging.getLogger(__name__)

ACTIVITY_PAGE_SIZE = 5_000


@dataclass(frozen=True)
class Window:
    """The span of source activity a run reads; ``full`` means compare every item instead, for ``reason``."""

    start: datetime | None
    end: datetime
    full: bool
    reason: str | None = None

    def describe(self) -> str:
        if self.full:
            return f"full copy (as of {self.end.isoformat()}; {self.reason})"
        assert self.start is not None
        return f"activity from {self.start.isoformat()} to {self.end.isoformat()}"

    def in_full(self, reason: str) -> Window:
        return Window(None, self.end, full=True, reason=reason)


def compute_window(
    interval_start: datetime | None,
    interval_end: datetime,
    prev_success_end: datetime | None,
    overlap: timedelta,
    full_resync: bool = False,
) -> Window:
    """The run's data interval, widened back to the previous success and by ``overlap``.

    Widening covers changes a failed run or a stopped scheduler left behind; the overlap covers activity
    committed just after the previous run read its window. Without a previous success (a new remote),
    or when asked, the run copies everything.
    """
    if full_resync:
        return Window(None, interval_end, full=True, reason="full_resync requested")
    if prev_success_end is None:
        return Window(None, interval_end, full=True, reason="first run")
    start = interval_start or prev_success_end
    start = min(start, prev_success_end)
    return Window(start - overlap, interval_end, full=False)


class CollectionChanges(BaseModel):
    """What one collection contributes to a run, and where its staged files are."""

    collection: str
    pk: str
    fields: list[str]
    upserts: int
    deletes: int
    upserts_path: str
    deletes_path: str
    retried: list[str] = []
    source_keys_path: str | None = None
    # The earliest source activity among the staged changes: remote changes before it cannot conflict.
    oldest_change: str | None = None


class ChangeManifest(BaseModel):
    """The extraction result passed through XCom: counts and paths, never item contents."""

    run_folder: str
    window: str
    full: bool
    collections: list[CollectionChanges]
    full_reason: str | None = None
    # A full comparison that also deletes remote items the source does not have (their keys are staged).
    prune: bool = False
    # Where the next run's reading by activity id starts; None for runs that keep no cursor (backfills).
    cursor: ActivityCursor | None = None
    # The window's start (ISO 8601), None for a full copy: files changed on the source since are refreshed.
    changed_since: str | None = None

    def schemas(self) -> tuple[CollectionSchema, ...]:
        """The schema this extraction read (listed aliases already replaced by the collections behind them):
        planning checks and writes exactly these collections and fields."""
        return tuple(CollectionSchema.model_construct(name=c.collection, fields=tuple(c.fields))
                     for c in self.collections)


def changed_keys(
    source: DirectusHook, shapes: dict[str, CollectionShape], window: Window | None, spans: list[tuple[int, int]],
    sync_user: str,
) -> dict[str, dict[str, str | None]]:
    """Keys with create/update/delete activity in ``window`` or in the id ``spans``, per collection, with
    the timestamp of their latest change not made by ``sync_user`` (``None`` if the sync made them all).

    The sync's own writes count as changes too: a value another remote's sync brought here travels on
    (A -> B -> C). It never travels back and forth: planning finds it equal where it came from, and the
    conflict check compares where each value was first made (see origins.py), not who wrote it here.
    """
    period = (iso_timestamp(window.start), iso_timestamp(window.end)) if window and window.start else None
    keys: dict[str, dict[str, str | None]] = {c: {} for c in shapes}
    after_id, pages, rows = 0, 0, 0
    while True:
        page = source.activity_page(list(shapes), after_id, None, ACTIVITY_PAGE_SIZE, window=period, spans=spans)
        if not page:
            break
        pages += 1
        rows += len(page)
        for entry in page:
            changed = keys[entry["collection"]]
            key = shapes[entry["collection"]].canonical_key(entry["item"])
            at = None if sync_user and entry.get("user") == sync_user else entry["timestamp"]
            changed[key] = _later(changed.get(key), at)
        after_id = int(page[-1]["id"])
    log.info("Read %d activity rows in %d pages: %s", rows, pages,
             ", ".join(f"{c}={len(k)} keys" for c, k in keys.items()))
    return keys


def _later(known: str | None, at: str | None) -> str | None:
    # Ids follow inserts, not commits: the latest change of a key is the one stamped last.
    if known is None or (at is not None and parse_timestamp(at) > parse_timestamp(known)):
        return at if at is not None else known
    return known


def extract(
    source: DirectusHook,
    remote: RemoteSource,
    window: Window,
    folder: ObjectStoragePath,
    retry_keys: dict[str, set[str]] | None = None,
    list_source_keys: bool = False,
    previous: ActivityCursor | None = None,
    keep_cursor: bool = True,
) -> ChangeManifest:
    """Stage every change of ``remote``'s collections in ``window`` under ``folder``.

    ``retry_keys`` (dead letters of earlier runs) are staged as their key's current state, whatever the
    window holds: first in a window's run, and in a full copy as the item it copies or, for a key the
    source no longer has, as a delete (a full copy stages no other deletes, and a dead-lettered delete
    must not vanish from the plan). A full copy with ``list_source_keys`` also stages every source key, so
    that the plan can prune the remote. Activity after the ``previous`` cursor is read as well, so no late
    commit or skewed clock hides a change; ``keep_cursor`` (off for backfills) returns the cursor the next
    run starts from. A window that starts before the oldest activity the source can show becomes a full
    comparison.
    """
    retry_keys = retry_keys or {}
    sync_user = source.current_user_id()
    shapes = {c.name: shape_of(source, c) for c in remote.sync_schema}
    now = datetime.now(UTC)
    if previous is not None and previous.source not in (None, source.directus_conn_id):
        log.warning("The activity cursor was kept for source %r, not %r: reading by time until a new one is kept",
                    previous.source, source.directus_conn_id)
        previous = None
    activity_window = None if window.full else window  # a full comparison still reads the activity it can
    if not window.full and (reason := cursor.beyond_horizon(source, window.start, previous, now)):
        # Deletes older than the horizon left no trace but the missing item: only a mirror may prune for them.
        list_source_keys = list_source_keys or bool(remote.reconcile_prune)
        log.warning("Comparing every item instead of reading activity%s: %s",
                    " (and pruning, as reconcile_prune is set)" if list_source_keys else "", reason)
        window = window.in_full(f"activity horizon: {reason}")
    spans, next_cursor = _read_by_id(source, previous, keep_cursor, now)
    keys = changed_keys(source, shapes, activity_window, spans, sync_user) if activity_window or spans else None
    result = []
    for name, shape in shapes.items():
        upserts_path, deletes_path = folder / f"{name}.upserts.jsonl", folder / f"{name}.deletes.jsonl"
        retried = sorted({shape.canonical_key(k) for k in retry_keys.get(name, ())})
        logged = keys[name] if keys else {}
        records: Iterator[dict[str, Any]]
        keys_path = folder / f"{name}.source_keys.jsonl" if window.full and list_source_keys else None
        with JsonlWriter(deletes_path) as deleted:  # streamed, like the upserts: memory is bounded by the batch
            # Keys a full copy must account for: what the activity and the dead letters name.
            unseen = set(retried) | set(logged) if window.full else set()
            if window.full:
                records = ({"item": item, "changed_at": None}
                           for item in _all_items(source, shape, remote.batch_size, keys_path, unseen))
            else:
                changed: dict[str, str | None] = dict.fromkeys(retried)
                changed.update(logged)
                records = _current_state(source, shape, changed, remote.batch_size, deleted)
            upserts = write_jsonl(upserts_path, records)
            for key in sorted(unseen):  # named by the activity or a dead letter, and not on the source: deleted
                deleted.write({"key": shape.typed_key(key), "changed_at": logged.get(key)})
        log.info("%s: staged %d upserts and %d deletes (%d dead letters retried)", name, upserts, deleted.count,
                 len(retried))
        result.append(CollectionChanges(collection=name, pk=shape.pk, fields=list(shape.fields),
                                        upserts=upserts, deletes=deleted.count, upserts_path=str(upserts_path),
                                        deletes_path=str(deletes_path), retried=retried,
                                        source_keys_path=str(keys_path) if keys_path else None,
                                        oldest_change=None if window.full else _oldest_change(logged, retried)))
    since = iso_timestamp(window.start) if window.start and not window.full else None
    return ChangeManifest(run_folder=str(folder), window=window.describe(), full=window.full,
                          full_reason=window.reason, prune=window.full and list_source_keys, cursor=next_cursor,
                          collections=result, changed_since=since)


def _read_by_id(
    source: DirectusHook, previous: ActivityCursor | None, keep_cursor: bool, now: datetime
) -> tuple[list[tuple[int, int]], ActivityCursor | None]:
    """The activity id spans this run reads besides its window, and the cursor the next run starts from.

    Both are taken before any activity or item is read, so whatever commits meanwhile is left to the
    next run rather than skipped.
    """
    if previous is not None:
        step = cursor.advance(source, previous, now)
        return step.spans, step.cursor if keep_cursor else None
    return [], cursor.start(source, now) if keep_cursor else None


def _all_items(
    source: DirectusHook, shape: CollectionShape, page_size: int, keys_path: ObjectStoragePath | None,
    unseen: set[str],
) -> Iterator[dict[str, Any]]:
    """Every item of the collection; the keys found are taken out of ``unseen``."""
    keys = JsonlWriter(keys_path) if keys_path else None
    with keys or contextlib.nullcontext():
        for number, page in enumerate(source.iter_items(shape.collection, shape.pk, shape.read_fields,
                                                        page_size, shape.keyset), 1):
            log.info("%s: read page %d of the full copy (%d items)", shape.collection, number, len(page))
            for item in page:
                key = shape.canonical_key(item[shape.pk])
                unseen.discard(key)
                if keys:
                    keys.write(key)
            yield from page


def _current_state(
    source: DirectusHook, shape: CollectionShape, changed: dict[str, str | None], batch_size: int,
    deleted: JsonlWriter,
) -> Iterator[dict[str, Any]]:
    """Yield the current state of each changed key that still exists; write the others to ``deleted``.

    Each record carries ``changed_at``, the key's latest source activity, for conflict checks. The next
    batches are read while the current one is staged; each batch holds as many keys as the byte budget
    holds items (the hook's page sizer learns their size), so the batches in flight stay within it.
    """
    def read(batch: list[str]) -> list[dict[str, Any]]:
        return source.read_items(shape.collection, shape.pk, batch, shape.read_fields)

    batches = sized_batches(list(changed), batch_size, source.sizer(shape.collection, shape.read_fields))
    for batch, found in read_ahead(read, batches, READ_AHEAD):
        # The read asked for exactly these keys, in pages the instance answers in full: absent is gone.
        present = {shape.canonical_key(item[shape.pk]) for item in found}
        for key in batch:
            if key not in present:
                deleted.write({"key": shape.typed_key(key), "changed_at": changed[key]})
        for item in found:
            yield {"item": item, "changed_at": changed[shape.canonical_key(item[shape.pk])]}


def _oldest_change(logged: dict[str, str | None], retried: list[str]) -> str | None:
    """The earliest change time among the staged keys; ``None`` when some key has none (a change only
    the sync made, or a dead letter outside the window), since then it bounds nothing."""
    times = [logged.get(key) for key in {*logged, *retried}]
    if not times or any(t is None for t in times):
        return None
    return min((t for t in times if t is not None), key=parse_timestamp)

