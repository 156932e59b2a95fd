"""Planning: compare staged source changes with the remote and decide what to create, update or delete.

Items already equal on the remote are left alone, so an overlapping window, a replay or a retried run
writes nothing twice and adds no activity or revisions on the remote.

Conflicts are settled by the last writer: a change is not applied when the remote's own latest change
to that key (made by anyone but the sync) is newer than the source's. With two-way sync the newer change
then travels the other way in the opposite DAG. Ties go to the instance whose connection id sorts last,
the same answer in both directions. A full copy has no change times and is authoritative.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel

from directus_sync.extract import ChangeManifest, CollectionChanges
from directus_sync.hook import DirectusHook
from directus_sync.schema import CollectionShape, prune
from directus_sync.staging import JsonlWriter, batched, read_jsonl

log = logging.getLogger(__name__)

MAX_CONFLICT_KEYS_LOGGED = 20


class CollectionPlan(BaseModel):
    """The writes one collection needs on the remote, staged as files."""

    collection: str
    pk: str
    fields: list[str]
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    unchanged: int = 0
    conflicts: int = 0
    creates_path: str
    updates_path: str
    deletes_path: str


class SyncPlan(BaseModel):
    """The plan passed through XCom: counts and paths, never item contents."""

    run_folder: str
    window: str
    collections: list[CollectionPlan]


class ConflictGuard:
    """Tells whether the remote changed a key after the source did (the remote then keeps its change)."""

    def __init__(self, remote: DirectusHook, remote_sync_user: str | None, source_wins_ties: bool) -> None:
        self.remote = remote
        self.remote_sync_user = remote_sync_user
        self.source_wins_ties = source_wins_ties

    def losing_keys(self, collection: str, changed_at: dict[str, str | None]) -> set[str]:
        """Keys whose source change (at ``changed_at``) is older than the remote's latest own change."""
        timed = {k: t for k, t in changed_at.items() if t is not None}
        if not timed:
            return set()
        # Only remote changes at or after the oldest source change can be later than one of them.
        since = min(timed.values(), key=_parse)
        remote_times = self.remote.latest_changes(collection, list(timed), self.remote_sync_user, since)
        return {k for k, t in timed.items() if k in remote_times and self._remote_is_later(t, remote_times[k])}

    def _remote_is_later(self, source_time: str, remote_time: str) -> bool:
        source_at, remote_at = _parse(source_time), _parse(remote_time)
        return remote_at > source_at or (remote_at == source_at and not self.source_wins_ties)


def plan(
    remote: DirectusHook, manifest: ChangeManifest, shapes: dict[str, CollectionShape], batch_size: int,
    guard: ConflictGuard,
) -> SyncPlan:
    """Write the create/update/delete files of every collection in ``manifest``."""
    folder = ObjectStoragePath(manifest.run_folder)
    plans = [plan_collection(remote, changes, shapes[changes.collection], folder, batch_size, guard)
             for changes in manifest.collections]
    return SyncPlan(run_folder=manifest.run_folder, window=manifest.window, collections=plans)


def plan_collection(
    remote: DirectusHook,
    changes: CollectionChanges,
    shape: CollectionShape,
    folder: ObjectStoragePath,
    batch_size: int,
    guard: ConflictGuard,
) -> CollectionPlan:
    name = changes.collection
    result = CollectionPlan(
        collection=name, pk=shape.pk, fields=list(shape.read_fields),
        creates_path=str(folder / f"{name}.creates.jsonl"),
        updates_path=str(folder / f"{name}.updates.jsonl"),
        deletes_path=str(folder / f"{name}.deletes.remote.jsonl"),
    )
    conflicts: list[str] = []
    with JsonlWriter(ObjectStoragePath(result.creates_path)) as creates, \
            JsonlWriter(ObjectStoragePath(result.updates_path)) as updates:
        for batch in batched(read_jsonl(ObjectStoragePath(changes.upserts_path)), batch_size):
            result.unchanged += _plan_upserts(remote, shape, batch, guard, creates, updates, conflicts)
    with JsonlWriter(ObjectStoragePath(result.deletes_path)) as deletes:
        for batch in batched(read_jsonl(ObjectStoragePath(changes.deletes_path)), batch_size):
            _plan_deletes(remote, shape, batch, guard, deletes, conflicts)
    result.creates, result.updates, result.deletes = creates.count, updates.count, deletes.count
    result.conflicts = len(conflicts)
    log.info("%s: %d to create, %d to update, %d to delete, %d already equal, %d conflicts kept the remote's "
             "newer change", name, result.creates, result.updates, result.deletes, result.unchanged,
             result.conflicts)
    if conflicts:
        log.warning("%s: conflicting keys (first %d): %s", name, MAX_CONFLICT_KEYS_LOGGED,
                    ", ".join(conflicts[:MAX_CONFLICT_KEYS_LOGGED]))
    return result


def _plan_upserts(
    remote: DirectusHook,
    shape: CollectionShape,
    batch: list[dict[str, Any]],
    guard: ConflictGuard,
    creates: JsonlWriter,
    updates: JsonlWriter,
    conflicts: list[str],
) -> int:
    """Stage creates and updates (changed fields plus the whole item) for one batch; return unchanged."""
    items = [prune(record["item"], shape) for record in batch]
    current = {str(i[shape.pk]): i for i in remote.read_items(shape.collection, shape.pk,
                                                              [i[shape.pk] for i in items], shape.read_fields)}
    differing = {str(item[shape.pk]): (item, record["changed_at"]) for item, record in zip(items, batch, strict=True)
                 if current.get(str(item[shape.pk])) != item}
    losing = guard.losing_keys(shape.collection, {k: at for k, (_, at) in differing.items()})
    conflicts.extend(sorted(losing))
    for key, (item, _) in differing.items():
        if key in losing:
            continue
        existing = current.get(key)
        if existing is None:
            creates.write(item)
        else:
            changed = {f: v for f, v in item.items() if f != shape.pk and existing.get(f) != v}
            updates.write({"key": item[shape.pk], "changes": changed, "item": item})
    return len(items) - len(differing)


def _plan_deletes(
    remote: DirectusHook,
    shape: CollectionShape,
    batch: list[dict[str, Any]],
    guard: ConflictGuard,
    deletes: JsonlWriter,
    conflicts: list[str],
) -> None:
    keys = [record["key"] for record in batch]
    present = {str(i[shape.pk]) for i in remote.read_items(shape.collection, shape.pk, keys, [shape.pk])}
    on_remote = {str(r["key"]): r for r in batch if str(r["key"]) in present}
    losing = guard.losing_keys(shape.collection, {k: r["changed_at"] for k, r in on_remote.items()})
    conflicts.extend(sorted(losing))
    for key, record in on_remote.items():
        if key not in losing:
            deletes.write(record["key"])


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
