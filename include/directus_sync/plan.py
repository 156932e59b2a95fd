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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel

from directus_sync.config import ConflictPolicy
from directus_sync.extract import ChangeManifest, CollectionChanges, parse_timestamp
from directus_sync.hook import DirectusHook
from directus_sync.pipeline import READ_AHEAD, read_ahead
from directus_sync.schema import CollectionShape, prune
from directus_sync.staging import JsonlWriter, batched, read_staged

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
    # Remote items the source did not list when extracted: apply_deletes asks the source again first.
    prunes: int = 0
    unchanged: int = 0
    conflicts: int = 0
    resolved_dead_letters: list[str] = []
    creates_path: str
    updates_path: str
    deletes_path: str
    prunes_path: str | None = None


class SyncPlan(BaseModel):
    """The plan passed through XCom: counts and paths, never item contents."""

    run_folder: str
    window: str
    collections: list[CollectionPlan]


@dataclass(frozen=True)
class Conflict:
    """A key the remote changed at or after the source's change, and which side's change was kept."""

    collection: str
    key: str
    source_at: str
    remote_at: str
    winner: str


class ConflictGuard:
    """Finds keys the remote changed after the source did and settles them by the remote's policy.

    ``last_writer_wins`` keeps the remote's newer change; ``source_wins`` overwrites it. Either way the
    conflict is kept in :attr:`conflicts` for the conflicts table.

    A collection nobody but the sync changed on the remote since the source's oldest change cannot
    conflict: :meth:`check_quiet` finds that out in one request, and its batches then read nothing.
    """

    def __init__(self, remote: DirectusHook, remote_sync_user: str | None, source_wins_ties: bool,
                 policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS) -> None:
        self.remote = remote
        self.remote_sync_user = remote_sync_user
        self.source_wins_ties = source_wins_ties
        self.policy = policy
        self.conflicts: list[Conflict] = []
        self.quiet: set[str] = set()

    def check_quiet(self, collection: str, oldest_change: str | None) -> None:
        """Note ``collection`` as quiet when the remote has no change of it by others since ``oldest_change``.

        A remote edit made after this check and before the writes is missed, as it would be between a
        batch's read and its write: planning takes seconds, while the check saves a read per batch.
        """
        if oldest_change and not self.remote.changed_since(collection, self.remote_sync_user, oldest_change):
            self.quiet.add(collection)

    def remote_times(self, shape: CollectionShape, changed_at: dict[str, str | None]) -> dict[str, str]:
        """The remote's latest own change of each timed key (only reads, so worker threads may call it)."""
        timed = [t for t in changed_at.values() if t is not None]
        if not timed or shape.collection in self.quiet:
            return {}
        # Only remote changes at or after the oldest source change can be later than one of them.
        since = min(timed, key=parse_timestamp)
        # The remote's log holds keys as they were sent to it, in whatever case.
        forms = [form for k, t in changed_at.items() if t is not None for form in shape.key_forms(k)]
        latest: dict[str, str] = {}
        for key, at in self.remote.latest_changes(shape.collection, forms, self.remote_sync_user, since).items():
            key = shape.canonical_key(key)
            if key not in latest or parse_timestamp(at) > parse_timestamp(latest[key]):
                latest[key] = at
        return latest

    def settle(self, collection: str, changed_at: dict[str, str | None], remote_times: dict[str, str]) -> set[str]:
        """Record the conflicts among ``changed_at`` and return the keys whose source change loses."""
        losing = set()
        for key, source_at in changed_at.items():
            if source_at is None:
                continue
            remote_at = remote_times.get(key)
            if remote_at is None or parse_timestamp(remote_at) < parse_timestamp(source_at):
                continue
            remote_wins = self.policy is ConflictPolicy.LAST_WRITER_WINS and (
                parse_timestamp(remote_at) > parse_timestamp(source_at) or not self.source_wins_ties)
            self.conflicts.append(Conflict(collection, key, source_at, remote_at,
                                           "remote" if remote_wins else "source"))
            if remote_wins:
                losing.add(key)
        return losing


def plan(
    remote: DirectusHook, manifest: ChangeManifest, shapes: dict[str, CollectionShape], batch_size: int,
    guard: ConflictGuard, prune_remote: bool = False, ahead: int = READ_AHEAD,
) -> SyncPlan:
    """Write the create/update/delete files of every collection in ``manifest``.

    ``prune_remote`` (reconcile of a one-way mirror) also deletes remote items the source does not have.
    ``ahead`` batches' remote reads run while the current batch is staged.
    """
    folder = ObjectStoragePath(manifest.run_folder)
    plans = [plan_collection(remote, changes, shapes[changes.collection], folder, batch_size, guard, prune_remote,
                             ahead) for changes in manifest.collections]
    return SyncPlan(run_folder=manifest.run_folder, window=manifest.window, collections=plans)


class _Writes:
    """The staged files of one collection, and what planning learnt on the way."""

    def __init__(self, plan: CollectionPlan, retried: list[str]) -> None:
        self.creates = JsonlWriter(ObjectStoragePath(plan.creates_path))
        self.updates = JsonlWriter(ObjectStoragePath(plan.updates_path))
        self.deletes = JsonlWriter(ObjectStoragePath(plan.deletes_path))
        self.prunes = JsonlWriter(ObjectStoragePath(plan.prunes_path)) if plan.prunes_path else None
        self.retried = set(retried)
        self.retried_seen: set[str] = set()
        self.retried_staged: set[str] = set()
        self.kept_remote: list[str] = []
        self.unchanged = 0

    def __enter__(self) -> _Writes:
        for writer in self._writers():
            writer.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for writer in self._writers():
            writer.__exit__(*exc_info)

    def _writers(self) -> list[JsonlWriter]:
        return [self.creates, self.updates, self.deletes, *([self.prunes] if self.prunes else [])]

    def seen(self, keys: Iterable[str]) -> None:
        """Note the dead-lettered keys among ``keys``, records of the source's current state."""
        if self.retried:
            self.retried_seen.update(k for k in keys if k in self.retried)

    def staged(self, key: str) -> None:
        if key in self.retried:
            self.retried_staged.add(key)

    def resolved(self) -> list[str]:
        """Dead letters whose key's current state needs no write: already done on the remote, or left to
        the remote's newer change by the conflict policy.

        A dead-lettered key missing from the staged records is not resolved, whatever the reason: it
        stays in the table until a run applies its current state.
        """
        return sorted(self.retried_seen - self.retried_staged)


def plan_collection(
    remote: DirectusHook,
    changes: CollectionChanges,
    shape: CollectionShape,
    folder: ObjectStoragePath,
    batch_size: int,
    guard: ConflictGuard,
    prune_remote: bool = False,
    ahead: int = READ_AHEAD,
) -> CollectionPlan:
    """Stage one collection's writes; each batch's remote reads overlap with staging the previous one."""
    name = changes.collection
    result = CollectionPlan(
        collection=name, pk=shape.pk, fields=list(shape.read_fields),
        creates_path=str(folder / f"{name}.creates.jsonl"),
        updates_path=str(folder / f"{name}.updates.jsonl"),
        deletes_path=str(folder / f"{name}.deletes.remote.jsonl"),
        prunes_path=str(folder / f"{name}.prunes.jsonl") if prune_remote and changes.source_keys_path else None,
    )
    guard.check_quiet(name, changes.oldest_change)
    with _Writes(result, changes.retried) as writes:
        upserts = batched(_staged(changes.upserts_path, changes.upserts), batch_size)
        # A first copy to an empty collection has nothing to compare with: skip a read per batch. Items
        # created there meanwhile are still handled: the apply rewrites a create whose key exists.
        empty = changes.upserts > 0 and not remote.has_items(name, shape.pk)
        for records, upsert_batch in read_ahead(lambda b: _read_upserts(remote, shape, b, guard, empty), upserts,
                                                ahead):
            writes.seen(shape.canonical_key(r["item"][shape.pk]) for r in records)
            _stage_upserts(upsert_batch, shape, guard, writes)
        deletes = batched(_staged(changes.deletes_path, changes.deletes), batch_size)
        for records, delete_batch in read_ahead(lambda b: _read_deletes(remote, shape, b, guard), deletes, ahead):
            writes.seen(shape.canonical_key(r["key"]) for r in records)
            _stage_deletes(delete_batch, shape, guard, writes)
        if prune_remote and changes.source_keys_path:
            # A full copy stages one upsert per source key, and lists each key once.
            _plan_prune(remote, shape, _staged(changes.source_keys_path, changes.upserts), batch_size, writes)
    result.creates, result.updates = writes.creates.count, writes.updates.count
    result.deletes, result.unchanged = writes.deletes.count, writes.unchanged
    result.prunes = writes.prunes.count if writes.prunes else 0
    result.conflicts = sum(1 for c in guard.conflicts if c.collection == name)
    result.resolved_dead_letters = writes.resolved()
    log.info("%s: %d to create, %d to update, %d to delete, %d already equal, %d conflicts", name,
             result.creates, result.updates, result.deletes, result.unchanged, result.conflicts)
    if writes.kept_remote:
        log.warning("%s: the remote's newer change was kept for these keys (first %d): %s", name,
                    MAX_CONFLICT_KEYS_LOGGED, ", ".join(writes.kept_remote[:MAX_CONFLICT_KEYS_LOGGED]))
    return result


def _staged(path: str, expected: int) -> Iterator[Any]:
    """A file extract_changes staged, which must hold the number of records its manifest says."""
    return read_staged(ObjectStoragePath(path), expected, "extract_changes")


@dataclass(frozen=True)
class _UpsertBatch:
    """One batch of source items beside what the remote holds for them."""

    differing: dict[str, tuple[dict[str, Any], str | None]]  # key -> (pruned item, source change time)
    current: dict[str, dict[str, Any]]  # the remote's items of the batch, by key
    remote_times: dict[str, str]  # the remote's latest own change of the differing keys
    unchanged: int


def _read_upserts(
    remote: DirectusHook, shape: CollectionShape, batch: list[dict[str, Any]], guard: ConflictGuard,
    remote_empty: bool = False,
) -> _UpsertBatch:
    """Read the remote's state of one batch (runs in a worker thread: reads only)."""
    items = [prune(record["item"], shape) for record in batch]
    found = [] if remote_empty else remote.read_items(shape.collection, shape.pk, [i[shape.pk] for i in items],
                                                      shape.read_fields)
    current = {shape.canonical_key(i[shape.pk]): i for i in found}
    differing = {key: (item, record["changed_at"]) for item, record in zip(items, batch, strict=True)
                 if current.get(key := shape.canonical_key(item[shape.pk])) != item}
    remote_times = guard.remote_times(shape, {k: at for k, (_, at) in differing.items()})
    return _UpsertBatch(differing, current, remote_times, len(items) - len(differing))


def _stage_upserts(batch: _UpsertBatch, shape: CollectionShape, guard: ConflictGuard, writes: _Writes) -> None:
    """Stage creates and updates (changed fields plus the whole item) for one batch."""
    writes.unchanged += batch.unchanged
    losing = guard.settle(shape.collection, {k: at for k, (_, at) in batch.differing.items()}, batch.remote_times)
    writes.kept_remote.extend(sorted(losing))
    for key, (item, _) in batch.differing.items():
        if key in losing:
            continue
        writes.staged(key)
        existing = batch.current.get(key)
        if existing is None:
            writes.creates.write(item)
        else:
            changed = {f: v for f, v in item.items() if f != shape.pk and existing.get(f) != v}
            writes.updates.write({"key": item[shape.pk], "changes": changed, "item": item})


def _read_deletes(
    remote: DirectusHook, shape: CollectionShape, batch: list[dict[str, Any]], guard: ConflictGuard
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The batch's delete records whose keys the remote still has, and its latest own change of them."""
    keys = [record["key"] for record in batch]
    found = remote.read_items(shape.collection, shape.pk, keys, [shape.pk])
    # The read asked for exactly these keys, in pages the instance answers in full: absent is gone.
    present = {shape.canonical_key(i[shape.pk]) for i in found}
    on_remote = {key: r for r in batch if (key := shape.canonical_key(r["key"])) in present}
    return on_remote, guard.remote_times(shape, {k: r["changed_at"] for k, r in on_remote.items()})


def _stage_deletes(
    batch: tuple[dict[str, dict[str, Any]], dict[str, str]], shape: CollectionShape, guard: ConflictGuard,
    writes: _Writes,
) -> None:
    on_remote, remote_times = batch
    losing = guard.settle(shape.collection, {k: r["changed_at"] for k, r in on_remote.items()}, remote_times)
    writes.kept_remote.extend(sorted(losing))
    for key, record in on_remote.items():
        if key not in losing:
            writes.staged(key)
            writes.deletes.write(record["key"])


def _plan_prune(
    remote: DirectusHook, shape: CollectionShape, source_keys: Iterable[Any], page_size: int, writes: _Writes,
) -> None:
    """Stage every remote key the source did not list (once: dead letters may have staged some as deletes).

    They go to a file of their own: the source may create one of them after it was listed, so the apply
    step asks the source again right before deleting them (see ``Applier``).
    """
    assert writes.prunes is not None, "plan_collection opens the prunes file whenever it prunes"
    keep = {shape.canonical_key(key) for key in source_keys}
    for page in remote.iter_items(shape.collection, shape.pk, [shape.pk], page_size, shape.keyset):
        for item in page:
            key = shape.canonical_key(item[shape.pk])
            if key not in keep and key not in writes.retried_staged:
                writes.prunes.write(item[shape.pk])
    log.info("%s: %d remote items are not on the source and will be pruned", shape.collection, writes.prunes.count)
