"""Planning: compare staged source items with the remote and decide what to create, update or delete.

Items already equal on the remote are left alone, so an overlapping window, a replay or a retried run
writes nothing twice and adds no activity or revisions on the remote.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel

from directus_sync.extract import ChangeManifest, CollectionChanges
from directus_sync.hook import DirectusHook
from directus_sync.schema import CollectionShape, prune
from directus_sync.staging import JsonlWriter, batched, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


class CollectionPlan(BaseModel):
    """The writes one collection needs on the remote, staged as files."""

    collection: str
    pk: str
    fields: list[str]
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    unchanged: int = 0
    creates_path: str
    updates_path: str
    deletes_path: str


class SyncPlan(BaseModel):
    """The plan passed through XCom: counts and paths, never item contents."""

    run_folder: str
    window: str
    collections: list[CollectionPlan]

    def sample_keys(self) -> dict[str, int]:
        return {c.collection: c.creates + c.updates + c.deletes for c in self.collections}


def plan(
    remote: DirectusHook, manifest: ChangeManifest, shapes: dict[str, CollectionShape], batch_size: int
) -> SyncPlan:
    """Write the create/update/delete files of every collection in ``manifest``."""
    folder = ObjectStoragePath(manifest.run_folder)
    plans = [plan_collection(remote, changes, shapes[changes.collection], folder, batch_size)
             for changes in manifest.collections]
    return SyncPlan(run_folder=manifest.run_folder, window=manifest.window, collections=plans)


def plan_collection(
    remote: DirectusHook,
    changes: CollectionChanges,
    shape: CollectionShape,
    folder: ObjectStoragePath,
    batch_size: int,
) -> CollectionPlan:
    name = changes.collection
    result = CollectionPlan(
        collection=name, pk=shape.pk, fields=list(shape.read_fields),
        creates_path=str(folder / f"{name}.creates.jsonl"),
        updates_path=str(folder / f"{name}.updates.jsonl"),
        deletes_path=str(folder / f"{name}.deletes.remote.jsonl"),
    )
    upserts = (prune(item, shape) for item in read_jsonl(ObjectStoragePath(changes.upserts_path)))
    with JsonlWriter(ObjectStoragePath(result.creates_path)) as creates, \
            JsonlWriter(ObjectStoragePath(result.updates_path)) as updates:
        for batch in batched(upserts, batch_size):
            result.unchanged += _diff_batch(remote, shape, batch, creates, updates)
    result.creates, result.updates = creates.count, updates.count
    deletes = list(read_jsonl(ObjectStoragePath(changes.deletes_path)))
    present = [key for batch in batched(deletes, batch_size) for key in _existing_keys(remote, shape, batch)]
    result.deletes = write_jsonl(ObjectStoragePath(result.deletes_path), present)
    log.info("%s: %d to create, %d to update, %d to delete, %d already equal on the remote",
             name, result.creates, result.updates, result.deletes, result.unchanged)
    return result


def _diff_batch(
    remote: DirectusHook,
    shape: CollectionShape,
    batch: list[dict[str, Any]],
    creates: JsonlWriter,
    updates: JsonlWriter,
) -> int:
    """Stage creates and updates (changed fields plus the whole item) for one batch; return unchanged."""
    keys = [item[shape.pk] for item in batch]
    current = {str(i[shape.pk]): i for i in remote.read_items(shape.collection, shape.pk, keys,
                                                              shape.read_fields)}
    unchanged = 0
    for item in batch:
        existing = current.get(str(item[shape.pk]))
        if existing is None:
            creates.write(item)
            continue
        changed = {f: v for f, v in item.items() if f != shape.pk and existing.get(f) != v}
        if changed:
            updates.write({"key": item[shape.pk], "changes": changed, "item": item})
        else:
            unchanged += 1
    return unchanged


def _existing_keys(remote: DirectusHook, shape: CollectionShape, keys: list[Any]) -> list[Any]:
    found = {str(i[shape.pk]) for i in remote.read_items(shape.collection, shape.pk, keys, [shape.pk])}
    return [key for key in keys if str(key) in found]
