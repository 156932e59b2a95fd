"""Writing a plan to the remote in bulk, idempotently.

Every write is an array call on ``/items/{collection}``, in batches bounded by item count and by request
size (Directus refuses bodies over ``MAX_PAYLOAD_SIZE``, 1 MB by default). The remote may have changed
since the plan was made, so a batch that fails because keys appeared or vanished is re-read and retried
as what it now is: a create whose key exists becomes an update, an update whose key is gone becomes a
create, and deleting a key that is already gone is success.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from airflow.sdk import ObjectStoragePath

from directus_sync.hook import DirectusError, DirectusHook, encode_json
from directus_sync.plan import CollectionPlan
from directus_sync.staging import read_jsonl

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 900_000
# Answers Directus gives when keys exist or not, rather than for the data itself.
KEY_STATE_STATUSES = (400, 403, 409)


def request_batches(items: Iterable[Any], max_count: int, max_bytes: int) -> Iterator[list[Any]]:
    """Group ``items`` so each group has at most ``max_count`` items and a JSON body under ``max_bytes``.

    An item larger than ``max_bytes`` on its own still gets a batch of its own: Directus decides.
    """
    batch: list[Any] = []
    size = 2
    for item in items:
        width = len(encode_json(item)) + 1  # the item and its comma
        if batch and (len(batch) >= max_count or size + width > max_bytes):
            yield batch
            batch, size = [], 2
        batch.append(item)
        size += width
    if batch:
        yield batch


def apply_creates(remote: DirectusHook, plan: CollectionPlan, max_count: int,
                  max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """Create the plan's new items; return how many items were written."""
    written = 0
    for number, batch in enumerate(request_batches(_records(plan.creates_path), max_count, max_bytes), 1):
        try:
            remote.create_items(plan.collection, plan.pk, batch)
        except DirectusError as exc:
            if exc.status not in KEY_STATE_STATUSES:
                raise
            _upsert_after_conflict(remote, plan, batch, exc)
        written += len(batch)
        log.info("%s: created batch %d (%d items, %d so far)", plan.collection, number, len(batch), written)
    return written


def apply_updates(remote: DirectusHook, plan: CollectionPlan, max_count: int,
                  max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """Send the changed fields of the plan's updated items; return how many items were written."""
    written = 0
    for number, batch in enumerate(request_batches(_records(plan.updates_path), max_count, max_bytes), 1):
        payload = [{plan.pk: record["key"], **record["changes"]} for record in batch]
        try:
            remote.update_items(plan.collection, plan.pk, payload)
        except DirectusError as exc:
            if exc.status not in KEY_STATE_STATUSES:
                raise
            _upsert_after_conflict(remote, plan, [record["item"] for record in batch], exc)
        written += len(batch)
        log.info("%s: updated batch %d (%d items, %d so far)", plan.collection, number, len(batch), written)
    return written


def apply_deletes(remote: DirectusHook, plan: CollectionPlan, max_count: int,
                  max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """Delete the plan's keys from the remote; keys already gone count as done."""
    written = 0
    for number, batch in enumerate(request_batches(_records(plan.deletes_path), max_count, max_bytes), 1):
        try:
            remote.delete_items(plan.collection, batch)
        except DirectusError as exc:
            if exc.status not in KEY_STATE_STATUSES:
                raise
            still_there = _existing(remote, plan, batch)
            if still_there == set(map(str, batch)):
                raise
            remaining = [key for key in batch if str(key) in still_there]
            if remaining:
                remote.delete_items(plan.collection, remaining)
        written += len(batch)
        log.info("%s: deleted batch %d (%d keys, %d so far)", plan.collection, number, len(batch), written)
    return written


def _upsert_after_conflict(
    remote: DirectusHook, plan: CollectionPlan, items: list[dict[str, Any]], exc: DirectusError
) -> None:
    """Write ``items`` as updates where the key exists on the remote now and as creates elsewhere."""
    existing = _existing(remote, plan, [item[plan.pk] for item in items])
    to_update = [item for item in items if str(item[plan.pk]) in existing]
    to_create = [item for item in items if str(item[plan.pk]) not in existing]
    if (not to_update and exc.request_method == "POST") or (not to_create and exc.request_method == "PATCH"):
        raise exc  # the keys were as planned, so the failure is about the data itself
    log.info("%s: the remote changed since planning; writing %d as updates and %d as creates",
             plan.collection, len(to_update), len(to_create))
    if to_update:
        remote.update_items(plan.collection, plan.pk, to_update)
    if to_create:
        remote.create_items(plan.collection, plan.pk, to_create)


def _existing(remote: DirectusHook, plan: CollectionPlan, keys: list[Any]) -> set[str]:
    return {str(item[plan.pk]) for item in remote.read_items(plan.collection, plan.pk, keys, [plan.pk])}


def _records(path: str) -> Iterator[Any]:
    return read_jsonl(ObjectStoragePath(path))
