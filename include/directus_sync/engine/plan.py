"""Planning: compare staged source changes with the remote and decide what to create, update or delete.

Items already equal on the remote are left alone, so an overlapping window, a replay or a retried run
writes nothing twice and adds no activity or revisions on the remote.

Conflicts are settled by the last writer: a source value is not written over a remote value whose
origin (when and where it was made, see origins.py) is newer. That holds for every kind of run, full
copies included, and across any number of hops; the newer value then travels the other way in the
opposite DAG. Equal times go to the instance whose connection id sorts last, the same answer everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from directus_sync.config import ConflictPolicy, batch_bytes
from directus_sync.directus.activity import iso_timestamp, parse_timestamp
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.schema import CollectionShape, prune
from directus_sync.engine import origins
from directus_sync.engine.extract import ChangeManifest, CollectionChanges
from directus_sync.engine.files import FILES
from directus_sync.engine.order import write_order
from directus_sync.engine.origins import UNKNOWN_TIME, Origin, newer
from directus_sync.engine.readahead import READ_AHEAD, read_ahead
from directus_sync.engine.staging import JsonlWriter, read_staged, staged_batches

log = logging.getLogger(__name__)

MAX_CONFLICT_KEYS_LOGGED = 20
# Keys of the staged writes a plan names itself, for failure reports read on any worker.
FIRST_KEYS_KEPT = 20


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
    # The first keys staged (deletes, updates, creates, prunes alike): what a failure report names.
    first_keys: list[str] = []
    creates_path: str
    updates_path: str
    deletes_path: str
    prunes_path: str | None = None
    # Per staged write, the origin it carries: recorded by the apply step once the remote has it.
    origins_path: str | None = None
    origins: int = 0
    # The many-to-one fields and the collection each points at; those set in the update pass (see order.py).
    references: dict[str, str] = {}
    deferred: list[str] = []
    # With ``prune_files``: the file ids the remote's items held before this run's updates and deletes (once
    # per item and field; apply_updates deletes those nothing references afterwards, see files.py).
    released_files_path: str | None = None
    released_files: int = 0

    @property
    def file_fields(self) -> list[str]:
        """The listed file fields: the many-to-one fields to ``directus_files``."""
        return [f for f, related in self.references.items() if related == FILES]


class SyncPlan(BaseModel):
    """The plan passed through XCom: counts and paths, never item contents."""

    run_folder: str
    window: str
    collections: list[CollectionPlan]
    # The extraction's window start (None: a full copy), for the files changed on the source since.
    changed_since: str | None = None


@dataclass(frozen=True)
class Conflict:
    """A key the remote changed at or after the source's change, and which side's change was kept.

    The times are the origins of the two values (see origins.py); the source's is ``None`` when its
    instance shows no change of the item (older than its activity log, or made without one).
    """

    collection: str
    key: str
    source_at: str | None
    remote_at: str
    winner: str


@dataclass(frozen=True)
class Instance:
    """One side of a pair: its hook, the name origins give it (its connection id), the sync's user there."""

    hook: DirectusHook
    name: str
    sync_user: str | None


@dataclass(frozen=True)
class Weighing:
    """The origins of a batch's values on both sides, as far as they are known."""

    source: dict[str, Origin]
    remote: dict[str, Origin]


class ConflictGuard:
    """Finds keys whose remote value is newer than the source's, and settles them by the remote's policy.

    Values are compared by their origin (see origins.py): when and where the change was made, however
    many instances it passed through since. ``last_writer_wins`` keeps the remote's newer value;
    ``source_wins`` overwrites it. Either way the conflict is kept in :attr:`conflicts` for the
    conflicts table. Each staged write carries its value's origin, which the apply step records once
    the remote has it (planning records nothing: a dry run plans too).

    A collection with no remote value newer than the source's oldest change cannot conflict:
    :meth:`check_quiet` finds that out in two queries, and its batches then read nothing remote.
    """

    def __init__(self, source: Instance, remote: Instance, engine: Engine,
                 policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS) -> None:
        self.source = source
        self.remote = remote
        self.engine = engine
        self.policy = policy
        self.conflicts: list[Conflict] = []
        self.quiet: set[str] = set()

    def check_quiet(self, collection: str, oldest_change: str | None) -> None:
        """Note ``collection`` as quiet when no remote value's origin is at or after ``oldest_change``.

        ``oldest_change`` bounds every staged value's origin from below (extraction leaves it out when
        some key has no change time). A remote edit made after this check and before the writes is
        missed, as it would be between a batch's read and its write: planning takes seconds, while the
        check saves reads per batch.
        """
        if not oldest_change:
            return
        remote = self.remote
        if (not remote.hook.changed_since(collection, remote.sync_user, oldest_change)
                and not origins.recorded_since(self.engine, remote.name, collection, parse_timestamp(oldest_change))):
            self.quiet.add(collection)

    def weigh(self, shape: CollectionShape, changed_at: dict[str, str | None]) -> Weighing:
        """The origins of the source's and the remote's values of ``changed_at``'s keys (reads only, so
        worker threads may call it). ``changed_at`` holds each key's latest source change not made by the
        sync, when extraction saw one.

        Every source value gets an origin: one its instance shows no change for (older than its log,
        or written to the database directly) counts as made at the beginning of time, there. So two
        such values still settle the same way in both directions.
        """
        keys = list(changed_at)
        source = origins.recorded(self.engine, self.source.name, shape.collection, keys)
        for key, at in changed_at.items():
            if at is not None:
                source[key] = newer(source.get(key), Origin.of_change(at, self.source.name))
        # Keys without a change time (full copies, retried dead letters, values the sync brought) need
        # the source's own log: a recorded origin alone may be older than an edit made since.
        untimed = [k for k in keys if changed_at[k] is None]
        if untimed:
            self._merge_logged(source, self.source, shape, untimed, None)
        for key in keys:
            source.setdefault(key, Origin(UNKNOWN_TIME, self.source.name))
        if not keys or shape.collection in self.quiet:
            return Weighing(source, {})
        # Remote changes older than every source origin cannot be newer than any of them.
        oldest = min(source.values()).at
        remote = origins.recorded(self.engine, self.remote.name, shape.collection, keys)
        self._merge_logged(remote, self.remote, shape, keys, None if oldest == UNKNOWN_TIME else oldest)
        return Weighing(source, remote)

    @staticmethod
    def _merge_logged(found: dict[str, Origin], side: Instance, shape: CollectionShape, keys: list[str],
                      since: datetime | None) -> None:
        """Raise each key's origin in ``found`` to its latest change on ``side`` by others than the sync: an
        item's origin there is that change or the one the sync recorded with its last write, the later."""
        # The instance's log holds keys as they were sent to it, in whatever case.
        forms = [form for key in keys for form in shape.key_forms(key)]
        stamp = iso_timestamp(since) if since else None
        for key, at in side.hook.latest_changes(shape.collection, forms, side.sync_user, stamp).items():
            key = shape.canonical_key(key)
            found[key] = newer(found.get(key), Origin.of_change(at, side.name))

    def settle(self, collection: str, weighing: Weighing) -> set[str]:
        """Record the conflicts of a weighed batch and return the keys whose source value is not written.

        When both values were made on the source, the remote's is replaced by what the source holds now:
        that is the same change (written again: it repairs drift written past Directus) or a later one,
        even when the source's log no longer shows it (older than its activity horizon) or its clock went
        back. A value made elsewhere with the same origin is the same change: it is never written back
        towards where it came from, so fields an instance rewrites on every write (``date_updated``) cannot
        make two syncs echo.
        """
        kept = set()
        for key, remote_at in weighing.remote.items():
            source_at = weighing.source[key]
            if source_at > remote_at or remote_at.instance == source_at.instance == self.source.name:
                continue
            if source_at == remote_at:
                kept.add(key)
                continue
            remote_wins = self.policy is ConflictPolicy.LAST_WRITER_WINS
            known = source_at.at != UNKNOWN_TIME
            self.conflicts.append(Conflict(collection, key, source_at.at.isoformat() if known else None,
                                           remote_at.at.isoformat(), "remote" if remote_wins else "source"))
            if remote_wins:
                kept.add(key)
        return kept

    def origin(self, weighing: Weighing, key: str) -> Origin:
        """The origin a write of ``key`` carries to the remote."""
        return weighing.source[key]


def plan(
    remote: DirectusHook, manifest: ChangeManifest, shapes: dict[str, CollectionShape], batch_size: int,
    guard: ConflictGuard, prune_remote: bool = False, ahead: int = READ_AHEAD, release_files: bool = False,
) -> SyncPlan:
    """Write the create/update/delete files of every collection in ``manifest``.

    ``prune_remote`` (reconcile of a one-way mirror) also deletes remote items the source does not have.
    ``ahead`` batches' remote reads run while the current batch is staged. ``release_files`` notes the files
    the remote's items stop referencing (for the row's ``prune_files``).
    """
    folder = ObjectStoragePath(manifest.run_folder)
    changes_of = {c.collection: c for c in manifest.collections}
    order, deferred = write_order(list(changes_of), {name: dict(shapes[name].references) for name in changes_of})
    # In write order: the apply steps create and update in it, and delete in reverse.
    plans = [plan_collection(remote, changes_of[name], shapes[name], folder, batch_size, guard, prune_remote, ahead,
                             deferred.get(name, ()), release_files) for name in order]
    return SyncPlan(run_folder=manifest.run_folder, window=manifest.window, collections=plans,
                    changed_since=manifest.changed_since)


class _Writes:
    """The staged files of one collection, and what planning learnt on the way."""

    def __init__(self, plan: CollectionPlan, retried: list[str]) -> None:
        self.creates = JsonlWriter(ObjectStoragePath(plan.creates_path))
        self.updates = JsonlWriter(ObjectStoragePath(plan.updates_path))
        self.deletes = JsonlWriter(ObjectStoragePath(plan.deletes_path))
        self.prunes = JsonlWriter(ObjectStoragePath(plan.prunes_path)) if plan.prunes_path else None
        self.origins = JsonlWriter(ObjectStoragePath(plan.origins_path)) if plan.origins_path else None
        self.released = JsonlWriter(ObjectStoragePath(plan.released_files_path)) if plan.released_files_path else None
        # The fields whose remote values are noted as released when a write replaces or deletes them.
        self.file_fields = plan.file_fields if self.released else []
        self.retried = set(retried)
        self.retried_seen: set[str] = set()
        self.retried_staged: set[str] = set()
        self.kept_remote: list[str] = []
        self.first_keys: list[str] = []
        self.unchanged = 0

    def __enter__(self) -> _Writes:
        for writer in self._writers():
            writer.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for writer in self._writers():
            writer.__exit__(*exc_info)

    def _writers(self) -> list[JsonlWriter]:
        optional = [w for w in (self.origins, self.prunes, self.released) if w is not None]
        return [self.creates, self.updates, self.deletes, *optional]

    def carries(self, sent: Any, key: str, origin: Origin) -> None:
        """Note the origin the write of ``key`` (sent as ``sent``) carries, for the apply step to record
        once the remote has it."""
        if self.origins is not None:
            self.origins.write(origins.staged_record(sent, key, origin))

    def release(self, held: dict[str, Any], fields: Iterable[str] | None = None) -> None:
        """Note the files the remote item ``held`` (in ``fields``, or every file field) as released."""
        if self.released is not None:
            for f in self.file_fields if fields is None else fields:
                if held.get(f):
                    self.released.write(str(held[f]))

    def seen(self, keys: Iterable[str]) -> None:
        """Note the dead-lettered keys among ``keys``, records of the source's current state."""
        if self.retried:
            self.retried_seen.update(k for k in keys if k in self.retried)

    def staged(self, key: str) -> None:
        if len(self.first_keys) < FIRST_KEYS_KEPT:
            self.first_keys.append(key)
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
    deferred: Sequence[str] = (),
    release_files: bool = False,
) -> CollectionPlan:
    """Stage one collection's writes; each batch's remote reads overlap with staging the previous one.

    Creates leave the ``deferred`` reference fields out; an update right after them sets those fields.
    With ``release_files``, the file ids the remote's items held in fields that updates change or deletes
    remove are staged too (see :attr:`CollectionPlan.released_files_path`).
    """
    name = changes.collection
    result = CollectionPlan(
        collection=name, pk=shape.pk, fields=list(shape.read_fields), references=dict(shape.references),
        deferred=list(deferred),
        creates_path=str(folder / f"{name}.creates.jsonl"),
        updates_path=str(folder / f"{name}.updates.jsonl"),
        deletes_path=str(folder / f"{name}.deletes.remote.jsonl"),
        prunes_path=str(folder / f"{name}.prunes.jsonl") if prune_remote and changes.source_keys_path else None,
        origins_path=str(folder / f"{name}.origins.jsonl"),
        released_files_path=(str(folder / f"{name}.released_files.jsonl")
                             if release_files and FILES in dict(shape.references).values() else None),
    )
    guard.check_quiet(name, changes.oldest_change)
    with _Writes(result, changes.retried) as writes:
        # Batches of at most batch_size records and the byte budget: with reads ahead, a few are in memory.
        upserts = _staged_batches(changes.upserts_path, changes.upserts, batch_size)
        # A first copy to an empty collection has nothing to compare with: skip a read per batch. Items
        # created there meanwhile are still handled: the apply rewrites a create whose key exists.
        empty = changes.upserts > 0 and not remote.has_items(name, shape.pk)
        for records, upsert_batch in read_ahead(lambda b: _read_upserts(remote, shape, b, guard, empty), upserts,
                                                ahead):
            writes.seen(shape.canonical_key(r["item"][shape.pk]) for r in records)
            _stage_upserts(upsert_batch, shape, guard, writes, deferred)
        deletes = _staged_batches(changes.deletes_path, changes.deletes, batch_size)
        held = writes.file_fields
        for records, delete_batch in read_ahead(lambda b: _read_deletes(remote, shape, b, guard, held), deletes,
                                                ahead):
            writes.seen(shape.canonical_key(r["key"]) for r in records)
            _stage_deletes(delete_batch, shape, guard, writes)
        if prune_remote and changes.source_keys_path:
            # A full copy stages one upsert per source key, and lists each key once.
            _plan_prune(remote, shape, _staged(changes.source_keys_path, changes.upserts), batch_size, writes)
    result.released_files = writes.released.count if writes.released else 0
    result.creates, result.updates = writes.creates.count, writes.updates.count
    result.deletes, result.unchanged = writes.deletes.count, writes.unchanged
    result.prunes = writes.prunes.count if writes.prunes else 0
    result.origins = writes.origins.count if writes.origins else 0
    result.conflicts = sum(1 for c in guard.conflicts if c.collection == name)
    result.resolved_dead_letters = writes.resolved()
    result.first_keys = writes.first_keys
    log.info("%s: %d to create, %d to update, %d to delete, %d already equal, %d conflicts", name,
             result.creates, result.updates, result.deletes, result.unchanged, result.conflicts)
    if writes.kept_remote:
        log.warning("%s: the remote's value was kept (newer, or the same change) for these keys (first %d): %s", name,
                    MAX_CONFLICT_KEYS_LOGGED, ", ".join(writes.kept_remote[:MAX_CONFLICT_KEYS_LOGGED]))
    return result


def _staged(path: str, expected: int) -> Iterator[Any]:
    """A file extract_changes staged, which must hold the number of records its manifest says."""
    return read_staged(ObjectStoragePath(path), expected, "extract_changes")


def _staged_batches(path: str, expected: int, batch_size: int) -> Iterator[list[Any]]:
    """A file extract_changes staged, in batches of at most ``batch_size`` records and the byte budget."""
    return staged_batches(ObjectStoragePath(path), expected, "extract_changes", batch_size, batch_bytes())


@dataclass(frozen=True)
class _UpsertBatch:
    """One batch of source items beside what the remote holds for them."""

    differing: dict[str, tuple[dict[str, Any], str | None]]  # key -> (pruned item, source change time)
    current: dict[str, dict[str, Any]]  # the remote's items of the batch, by key
    weighing: Weighing  # the origins of the differing keys' values on both sides
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
    weighing = guard.weigh(shape, {k: at for k, (_, at) in differing.items()})
    return _UpsertBatch(differing, current, weighing, len(items) - len(differing))


def _stage_upserts(batch: _UpsertBatch, shape: CollectionShape, guard: ConflictGuard, writes: _Writes,
                   deferred: Sequence[str] = ()) -> None:
    """Stage creates and updates (changed fields plus the whole item) for one batch.

    A create leaves out its ``deferred`` references, and an update marked ``deferred`` sets them after
    every create of the run (a cycle's items, or a parent created in the same batch, then all exist).
    """
    writes.unchanged += batch.unchanged
    losing = guard.settle(shape.collection, batch.weighing)
    writes.kept_remote.extend(sorted(losing))
    staged = [key for key in batch.differing if key not in losing]
    for key in staged:
        item = batch.differing[key][0]
        writes.staged(key)
        writes.carries(item[shape.pk], key, guard.origin(batch.weighing, key))
        existing = batch.current.get(key)
        if existing is None:
            later = {f: item[f] for f in deferred if item.get(f) is not None}
            writes.creates.write({f: v for f, v in item.items() if f not in later})
            if later:
                writes.updates.write({"key": item[shape.pk], "changes": later, "item": item, "deferred": True})
        else:
            changed = {f: v for f, v in item.items() if f != shape.pk and existing.get(f) != v}
            writes.updates.write({"key": item[shape.pk], "changes": changed, "item": item})
            writes.release(existing, [f for f in writes.file_fields if f in changed])


@dataclass(frozen=True)
class _DeleteBatch:
    """One batch of deletes beside what the remote holds for them."""

    on_remote: dict[str, dict[str, Any]]  # key -> delete record, for the keys the remote still has
    held: dict[str, dict[str, Any]]  # key -> the remote item's file fields (when files are released)
    weighing: Weighing


def _read_deletes(
    remote: DirectusHook, shape: CollectionShape, batch: list[dict[str, Any]], guard: ConflictGuard,
    file_fields: Sequence[str] = (),
) -> _DeleteBatch:
    """The batch's delete records whose keys the remote still has, and the origins of both sides' values."""
    keys = [record["key"] for record in batch]
    found = remote.read_items(shape.collection, shape.pk, keys, [shape.pk, *file_fields])
    # The read asked for exactly these keys, in pages the instance answers in full: absent is gone.
    held = {shape.canonical_key(i[shape.pk]): i for i in found}
    on_remote = {key: r for r in batch if (key := shape.canonical_key(r["key"])) in held}
    return _DeleteBatch(on_remote, held, guard.weigh(shape, {k: r["changed_at"] for k, r in on_remote.items()}))


def _stage_deletes(batch: _DeleteBatch, shape: CollectionShape, guard: ConflictGuard, writes: _Writes) -> None:
    losing = guard.settle(shape.collection, batch.weighing)
    writes.kept_remote.extend(sorted(losing))
    staged = [key for key in batch.on_remote if key not in losing]
    for key in staged:
        writes.staged(key)
        writes.deletes.write(batch.on_remote[key]["key"])
        writes.carries(batch.on_remote[key]["key"], key, guard.origin(batch.weighing, key))
        writes.release(batch.held[key])


def _plan_prune(
    remote: DirectusHook, shape: CollectionShape, source_keys: Iterable[Any], page_size: int, writes: _Writes,
) -> None:
    """Stage every remote key the source did not list (once: dead letters may have staged some as deletes).

    They go to a file of their own: the source may create one of them after it was listed, so the apply
    step asks the source again right before deleting them (see ``Applier``).
    """
    assert writes.prunes is not None, "plan_collection opens the prunes file whenever it prunes"
    keep = {shape.canonical_key(key) for key in source_keys}
    for page in remote.iter_items(shape.collection, shape.pk, [shape.pk, *writes.file_fields], page_size,
                                  shape.keyset):
        for item in page:
            key = shape.canonical_key(item[shape.pk])
            if key not in keep and key not in writes.retried_staged:
                writes.prunes.write(item[shape.pk])
                writes.staged(key)
                writes.release(item)
    log.info("%s: %d remote items are not on the source and will be pruned", shape.collection, writes.prunes.count)
