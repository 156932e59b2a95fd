"""Writing a plan to the remote in bulk, idempotently, isolating items the remote refuses.

Every write is an array call on ``/items/{collection}``, in batches bounded by item count and by request
size (Directus refuses bodies over ``MAX_PAYLOAD_SIZE``, 1 MB by default).

When a batch fails:

1. The remote may have changed since planning, so its keys are re-read once and the batch is written as
   what it now is: a create whose key exists becomes an update, an update whose key is gone becomes a
   create, and deleting a key that is already gone is success.
2. If it still fails for a reason about the data (validation, unique constraint, value too long, body
   too large), the batch is split in halves until the failing items are alone; every other item is
   written, and each failing one becomes a :class:`Failure` for the dead-letter table.

A body the remote finds too large (a smaller ``MAX_PAYLOAD_SIZE``, or a proxy's limit) also halves the
request budget for the rest of the run, so that only the batches already cut pay for the discovery.

Anything else (authentication, permissions, the remote being down after the hook's retries) stops the
task: nothing is marked done, and the next run covers it again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow.sdk import ObjectStoragePath

from directus_sync.config import batch_bytes
from directus_sync.directus.client import encode_json
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.schema import SchemaMismatch, describe_fields, primary_key
from directus_sync.engine import origins
from directus_sync.engine.files import FILES
from directus_sync.engine.plan import CollectionPlan
from directus_sync.engine.staging import batched_by_size, read_staged
from directus_sync.state import leases

log = logging.getLogger(__name__)

Action = Literal["create", "update", "delete"]
DEFAULT_MAX_REQUEST_BYTES = 900_000
# Answers that can mean "the key is not as planned": re-read the keys once.
KEY_STATE_STATUSES = (400, 403, 409)
# Answers about the data itself: isolate the failing items.
DATA_STATUSES = (400, 409, 413, 422)
# How Directus refuses a value whose referenced item does not exist.
FOREIGN_KEY_CODE = "INVALID_FOREIGN_KEY"


@dataclass(frozen=True)
class Failure:
    """One item the remote refused, and why (``error``: the safe form of Directus's answer, see
    :class:`~directus_sync.directus.errors.DirectusError`)."""

    collection: str
    key: str
    action: Action
    error: str


@dataclass
class Outcome:
    """What one apply task did to one collection."""

    written: int = 0
    written_keys: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    # Pruned keys not deleted because the source had them when asked again.
    spared: int = 0


def request_batches(
    items: Iterable[Any], max_count: int, max_bytes: int | Callable[[], int],
    body: Callable[[Any], Any] | None = None,
) -> Iterator[list[Any]]:
    """Group ``items`` so each group has at most ``max_count`` items and a JSON body under ``max_bytes``.

    ``max_bytes`` may be a callable, read as each batch fills, so a budget lowered meanwhile applies to
    the next batch. ``body`` gives what an item becomes in the request, when that is not the item
    itself. An item larger than the budget on its own still gets a batch of its own: Directus decides.
    """
    budget = max_bytes if callable(max_bytes) else lambda: max_bytes

    def width(item: Any) -> int:
        return len(encode_json(body(item) if body else item)) + 1  # the item and its comma

    return batched_by_size(items, max_count, lambda: budget() - 2, width)  # 2: the array's brackets


class Applier:
    """Writes the staged creates, updates or deletes (and prunes) of one collection plan.

    ``source`` is needed for prunes only: each batch of them is checked against it right before deleting.
    ``uncopied_files`` (file id -> why) are files the run could not copy: a record setting a file field to one
    of them fails alone, unsent, since the remote may hold a row of that id without its binary (Directus creates
    the row before it stores the binary, and cannot take it back as the sync user), which no foreign key refuses.
    """

    def __init__(self, remote: DirectusHook, plan: CollectionPlan, watch_keys: set[str] | None = None,
                 source: DirectusHook | None = None, recorder: origins.Recorder | None = None,
                 uncopied_files: Mapping[str, str] | None = None) -> None:
        self.remote = remote
        self.source = source
        self.recorder = recorder
        self.plan = plan
        self.uncopied_files = uncopied_files or {}
        self.watch_keys = watch_keys or set()
        self.outcome = Outcome()
        self.max_bytes = DEFAULT_MAX_REQUEST_BYTES
        self._lock = threading.Lock()
        # The key field of each referenced collection, read once when a refused item names its items.
        self._related_keys: dict[str, str] = {}

    def run(self, action: Action, max_count: int, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
            concurrency: int = 1) -> Outcome:
        """Write every staged record of ``action``, with up to ``concurrency`` requests in flight.

        Batches hold distinct keys, so their order does not matter; at most twice ``concurrency``
        batches are read ahead, which keeps memory bounded by the batch, not by the change set.
        Deletes are followed by the plan's prunes.
        """
        path, count = {"create": (self.plan.creates_path, self.plan.creates),
                       "update": (self.plan.updates_path, self.plan.updates),
                       "delete": (self.plan.deletes_path, self.plan.deletes)}[action]
        # Fails before the first write when the file is missing, and after the last when it is short.
        records = self._naming_copied_files(action, read_staged(ObjectStoragePath(path), count, "filter_schema"))
        self.max_bytes = min(max_bytes, batch_bytes())  # a request is a batch: within the batch budget too
        # Updates are staged with the whole item but send only the changed fields: measure what is sent.
        body = self._update_body if action == "update" else None
        batches = request_batches(records, max_count, lambda: self.max_bytes, body)
        _in_pool(batches, lambda batch, number: self._write_logged(action, batch, number), concurrency)
        if action == "delete" and self.plan.prunes:
            self._prune(max_count, concurrency)
        return self.outcome

    def _naming_copied_files(self, action: Action, records: Iterator[Any]) -> Iterator[Any]:
        """``records`` without those setting a file field to a file the run could not copy (each a failure)."""
        if action == "delete" or not self.plan.file_fields or not self.uncopied_files:
            yield from records
            return
        for record in records:
            if self._names_copied_files(action, record, record if action == "create" else record["changes"]):
                yield record

    def _names_copied_files(self, action: Action, record: Any, values: Mapping[str, Any]) -> bool:
        """Whether the file fields ``values`` set name no file the run could not copy; else ``record`` fails."""
        uncopied = [(f, str(values[f])) for f in self.plan.file_fields
                    if values.get(f) and str(values[f]) in self.uncopied_files]
        if not uncopied:
            return True
        why = "; ".join(f"{f} -> {FILES} {file_id} could not be copied: {self.uncopied_files[file_id]}"
                        for f, file_id in uncopied)
        with self._lock:
            self.outcome.failures.append(Failure(self.plan.collection, self._key(action, record), action,
                                                 f"{why}; retried by the next runs"))
        return False

    def _prune(self, max_count: int, concurrency: int) -> None:
        if self.source is None:
            raise ValueError(f"{self.plan.collection}: pruning needs the source, to read its keys again")
        assert self.plan.prunes_path is not None, "a plan with prunes names their file"
        records = read_staged(ObjectStoragePath(self.plan.prunes_path), self.plan.prunes, "filter_schema")
        batches = request_batches(records, max_count, lambda: self.max_bytes)
        _in_pool(batches, self._prune_batch, concurrency)
        if self.outcome.spared:
            log.info("%s: %d of %d pruned keys were spared: the source has them now (created after it was "
                     "listed)", self.plan.collection, self.outcome.spared, self.plan.prunes)

    def _prune_batch(self, keys: list[Any], number: int) -> None:
        """Delete the keys of one batch of prunes that the source still does not have.

        The source listed its keys at extraction; an item created there since (and copied by another
        run) must not be deleted from the remote, so the source is asked again right before deleting.
        """
        assert self.source is not None
        present = {str(i[self.plan.pk]) for i in self.source.read_items(self.plan.collection, self.plan.pk, keys,
                                                                        [self.plan.pk])}
        missing = [k for k in keys if str(k) not in present]
        with self._lock:
            self.outcome.spared += len(keys) - len(missing)
        if missing:
            self._write_logged("delete", missing, number)

    def _write_logged(self, action: Action, batch: list[Any], number: int) -> None:
        leases.check_held()  # a run whose lease lapsed must not write over the run that took it
        self._write(action, batch, reroute=True)
        log.info("%s: %s batch %d (%d items; %d written, %d refused so far)", self.plan.collection, action,
                 number, len(batch), self.outcome.written, len(self.outcome.failures))

    def _write(self, action: Action, records: list[Any], reroute: bool) -> None:
        try:
            self._send(action, records)
        except DirectusError as exc:
            if exc.too_large and len(records) > 1:  # one item over the limit says nothing of the others
                self._lower_budget(action, records)
            elif reroute and exc.status in KEY_STATE_STATUSES and self._reroute(action, records):
                return
            if exc.status not in DATA_STATUSES:
                raise
            if len(records) == 1:
                # The safe form only: the dead-letter table, XCom and alerts must not hold the item's values.
                error = str(exc) + self._missing_references(action, records[0], exc)
                failure = Failure(self.plan.collection, self._key(action, records[0]), action, error)
                with self._lock:
                    self.outcome.failures.append(failure)
                return
            middle = len(records) // 2
            self._write(action, records[:middle], reroute=False)
            self._write(action, records[middle:], reroute=False)
            return
        self._done(action, records)

    def _done(self, action: Action, records: list[Any]) -> None:
        """Count ``records`` as applied; the dead letters among them are resolved.

        An update that sets a created item's deferred references is part of that create: not counted twice.
        """
        keys = [self._key(action, r) for r in records]
        if self.recorder is not None:
            # A create that left deferred references out holds part of its value: its origin is recorded when
            # the update setting them lands, so that a run failing in between leaves the item to be written again.
            self.recorder.written([k for k, r in zip(keys, records, strict=True) if not self._partial(action, r)])
        with self._lock:
            self.outcome.written += sum(1 for r in records if not (isinstance(r, dict) and r.get("deferred")))
            self.outcome.written_keys |= self.watch_keys.intersection(keys)

    def _send(self, action: Action, records: list[Any]) -> None:
        collection, pk = self.plan.collection, self.plan.pk
        if action == "create":
            self.remote.create_items(collection, pk, records)
        elif action == "update":
            self.remote.update_items(collection, pk, self._body(action, records))
        else:
            self.remote.delete_items(collection, records)

    def _lower_budget(self, action: Action, records: list[Any]) -> None:
        """Fit later batches under the limit the remote just showed: half of the refused body."""
        refused = len(encode_json(self._body(action, records)))
        with self._lock:
            if refused // 2 >= self.max_bytes:
                return  # another batch already lowered it
            self.max_bytes = refused // 2
        log.warning("%s: the remote refused a %d-byte body as too large; sending at most %d bytes per request "
                    "from now on (raise the remote's MAX_PAYLOAD_SIZE to write in fewer requests)",
                    self.plan.collection, refused, self.max_bytes)

    def _body(self, action: Action, records: list[Any]) -> list[Any]:
        return [self._update_body(r) for r in records] if action == "update" else records

    def _update_body(self, record: dict[str, Any]) -> dict[str, Any]:
        """A staged update as the remote receives it: the key and the changed fields."""
        return {self.plan.pk: record["key"], **record["changes"]}

    def _reroute(self, action: Action, records: list[Any]) -> bool:
        """Write ``records`` as what their keys now call for; ``False`` when the keys are as planned."""
        keys = [self._key(action, r) for r in records]
        existing = {str(i[self.plan.pk]) for i in self.remote.read_items(self.plan.collection, self.plan.pk, keys,
                                                                          [self.plan.pk])}
        if action == "create":
            moved = [r for r in records if str(r[self.plan.pk]) in existing]
            if not moved:
                return False
            kept = [r for r in records if str(r[self.plan.pk]) not in existing]
            updates = [{"key": r[self.plan.pk], "item": r,
                        "changes": {f: v for f, v in r.items() if f != self.plan.pk}} for r in moved]
            self._sub_writes([("update", updates), ("create", kept)])
        elif action == "update":
            gone = [r for r in records if str(r["key"]) not in existing]
            if not gone:
                return False
            # Created whole, an item sets every file field: none may name a file the run could not copy (a
            # deferred update whose create failed for one, an item deleted on the remote meanwhile).
            self._sub_writes([("update", [r for r in records if str(r["key"]) in existing]),
                              ("create", [r["item"] for r in gone if self._names_copied_files(action, r, r["item"])])])
        else:
            if len(existing) == len(records):
                return False
            self._done(action, [r for r in records if str(r) not in existing])  # already gone: done
            self._sub_writes([("delete", [r for r in records if str(r) in existing])])
        log.info("%s: keys changed on the remote since planning; rewrote a %s batch as what they need now",
                 self.plan.collection, action)
        return True

    def _sub_writes(self, parts: list[tuple[Action, list[Any]]]) -> None:
        for action, records in parts:
            if records:
                self._write(action, records, reroute=False)

    def _partial(self, action: Action, record: Any) -> bool:
        """Whether ``record`` is a create staged without some of its deferred references (see plan.py)."""
        return action == "create" and any(f not in record for f in self.plan.deferred)

    def _missing_references(self, action: Action, record: Any, exc: DirectusError) -> str:
        """The referenced items the remote lacks, when it refused ``record`` for a foreign key: named by
        collection and key (keys are not item contents), so the dead letter says what has to arrive first."""
        if action == "delete" or FOREIGN_KEY_CODE not in exc.codes or not self.plan.references:
            return ""
        values = record if action == "create" else record["changes"]
        missing = []
        for field_name, related in sorted(self.plan.references.items()):
            value = values.get(field_name)
            if value is None:
                continue
            try:
                if self._on_remote(related, value):
                    continue
                missing.append(f"{field_name} -> {related} {value}")
            except (DirectusError, SchemaMismatch):  # the sync user may not read a collection it does not sync
                missing.append(f"{field_name} -> {related} {value} (a collection the sync user cannot read)")
        if not missing:
            return ""
        return ("; references items not on the remote (" + ", ".join(missing) + "): retried by the next runs "
                "until they arrive")

    def _on_remote(self, collection: str, key: Any) -> bool:
        with self._lock:
            pk = self._related_keys.get(collection)
        if pk is None:
            pk = primary_key(describe_fields(self.remote, collection), collection, self.remote.directus_conn_id)
            with self._lock:
                self._related_keys[collection] = pk
        return bool(self.remote.read_items(collection, pk, [key], [pk]))

    def _key(self, action: Action, record: Any) -> str:
        if action == "create":
            return str(record[self.plan.pk])
        return str(record["key"]) if action == "update" else str(record)


def _in_pool(batches: Iterable[list[Any]], write: Callable[[list[Any], int], None], concurrency: int) -> None:
    """``write(batch, number)`` for every batch, ``concurrency`` at a time; the first error stops the rest."""
    in_flight: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="directus-write") as pool:
        try:
            for number, batch in enumerate(batches, 1):
                if len(in_flight) >= 2 * concurrency:
                    in_flight.popleft().result()
                in_flight.append(pool.submit(write, batch, number))
            while in_flight:
                in_flight.popleft().result()
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
