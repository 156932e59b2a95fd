"""Planning compares staged source items with the remote and stages only real differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from directus_sync.config import ConflictPolicy
from directus_sync.extract import CollectionChanges, oldest, parse_timestamp
from directus_sync.plan import ConflictGuard, plan_collection
from directus_sync.schema import CollectionShape
from directus_sync.staging import StagedFileError, read_jsonl, write_jsonl


class FakeRemote:
    """Holds items by key and answers ``read_items`` as Directus does (missing keys are absent)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = {str(i["id"]): i for i in items}
        self.reads = 0
        self.changed_at: dict[str, str] = {}
        self.conflict_reads = 0

    def read_items(self, collection: str, pk: str, keys: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        self.reads += 1
        return [{f: self.items[str(k)].get(f) for f in fields} for k in keys if str(k) in self.items]

    def latest_changes(self, collection: str, keys: list[Any], exclude_user: str | None,
                       since: str | None = None) -> dict[str, str]:
        self.conflict_reads += 1
        return {str(k): self.changed_at[str(k)] for k in keys if str(k) in self.changed_at}

    def has_items(self, collection: str, pk: str) -> bool:
        return bool(self.items)

    def changed_since(self, collection: str, exclude_user: str | None, since: str) -> bool:
        return any(parse_timestamp(at) >= parse_timestamp(since) for at in self.changed_at.values())

    def iter_items(self, collection: str, pk: str, fields: list[str], page_size: int, keyset: bool = True) -> Any:
        yield [{pk: item[pk]} for item in self.items.values()]


def stage(folder: ObjectStoragePath, upserts: list[tuple[dict[str, Any], str | None]],
          deletes: list[tuple[int, str | None]], retried: list[str] = ()) -> CollectionChanges:
    write_jsonl(folder / "a.upserts.jsonl", [{"item": item, "changed_at": at} for item, at in upserts])
    write_jsonl(folder / "a.deletes.jsonl", [{"key": key, "changed_at": at} for key, at in deletes])
    return CollectionChanges(collection="a", pk="id", fields=["id", "title"], upserts=len(upserts),
                             deletes=len(deletes), upserts_path=str(folder / "a.upserts.jsonl"),
                             deletes_path=str(folder / "a.deletes.jsonl"), retried=list(retried),
                             oldest_change=oldest(at for _, at in [*upserts, *deletes] if at is not None))


SHAPE = CollectionShape("a", "id", "integer", ("title",))


def test_creates_updates_unchanged_and_deletes_are_told_apart(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "same", "secret": "x"}, None),
                             ({"id": 2, "title": "new title", "secret": "x"}, None),
                             ({"id": 3, "title": "brand new", "secret": "x"}, None)],
                    [(4, None), (5, None)])
    remote = FakeRemote([{"id": 1, "title": "same"}, {"id": 2, "title": "old title"}, {"id": 4, "title": "gone"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=2, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.unchanged) == (1, 1, 1, 1)
    assert list(read_jsonl(ObjectStoragePath(result.creates_path))) == [{"id": 3, "title": "brand new"}]
    assert list(read_jsonl(ObjectStoragePath(result.updates_path))) == [
        {"key": 2, "changes": {"title": "new title"}, "item": {"id": 2, "title": "new title"}}]
    assert list(read_jsonl(ObjectStoragePath(result.deletes_path))) == [4]
    assert remote.reads == 3  # two batches of upserts, one of deletes


def test_a_newer_change_on_the_remote_wins(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "older on source"}, "2026-11-26T12:00:00.000Z"),
                             ({"id": 2, "title": "newer on source"}, "2026-11-26T12:10:00.000Z"),
                             ({"id": 3, "title": "deleted on remote later"}, "2026-11-26T12:00:00.000Z")],
                    [(4, "2026-11-26T12:00:00.000Z")])
    remote = FakeRemote([{"id": 1, "title": "edited on remote"}, {"id": 2, "title": "x"}, {"id": 4, "title": "kept"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z", "2": "2026-11-26T12:05:00.000Z",
                         "3": "2026-11-26T12:05:00.000Z", "4": "2026-11-26T12:05:00.000Z"}
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.conflicts) == (0, 1, 0, 3)
    assert [r["key"] for r in read_jsonl(ObjectStoragePath(result.updates_path))] == [2]


def test_ties_go_to_the_same_side_in_both_directions(tmp_path: Path) -> None:
    same_time = "2026-11-26T12:00:00.000Z"
    outcomes = []
    for source_wins_ties in (True, False):
        folder = ObjectStoragePath(f"file://{tmp_path}/{source_wins_ties}")
        changes = stage(folder, [({"id": 1, "title": "mine"}, same_time)], [])
        remote = FakeRemote([{"id": 1, "title": "theirs"}])
        remote.changed_at = {"1": same_time}
        guard = ConflictGuard(remote, "sync", source_wins_ties)  # type: ignore[arg-type]
        outcomes.append(plan_collection(remote, changes, SHAPE, folder, 10, guard).updates)  # type: ignore[arg-type]
    assert outcomes == [1, 0]


def test_source_wins_overwrites_a_newer_remote_change_and_still_records_it(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "older on source"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "edited on remote"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z"}
    guard = ConflictGuard(remote, "sync", source_wins_ties=False, policy=ConflictPolicy.SOURCE_WINS)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.updates, result.conflicts) == (1, 1)
    assert [(c.key, c.winner) for c in guard.conflicts] == [("1", "source")]


def test_a_remote_nobody_else_changed_since_the_source_did_is_not_read_for_conflicts(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": k, "title": "new"}, "2026-11-26T12:00:00.000Z") for k in (1, 2, 3)],
                    [(4, "2026-11-26T12:01:00.000Z")])
    remote = FakeRemote([{"id": 1, "title": "old"}, {"id": 4, "title": "gone soon"}])
    remote.changed_at = {"1": "2026-11-26T11:00:00.000Z"}  # edited on the remote before the source's change
    guard = ConflictGuard(remote, "sync", source_wins_ties=False)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=1, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.conflicts) == (2, 1, 1, 0)
    assert remote.conflict_reads == 0  # one check for the collection instead of a read per batch


def test_a_remote_change_at_the_source_changes_own_time_is_still_checked_key_by_key(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "mine"}, "2026-11-26T12:00:00.000Z"),
                             ({"id": 2, "title": "mine"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "theirs"}, {"id": 2, "title": "theirs"}])
    remote.changed_at = {"2": "2026-11-26T12:00:00.000Z"}
    guard = ConflictGuard(remote, "sync", source_wins_ties=False)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.updates, result.conflicts) == (1, 1)
    assert [c.key for c in guard.conflicts] == ["2"]


def test_a_first_copy_to_an_empty_collection_stages_creates_without_reading_each_batch(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": k, "title": f"item {k}"}, None) for k in range(1, 6)], [])
    remote = FakeRemote([])
    guard = ConflictGuard(remote, "sync", source_wins_ties=False)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=2, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.unchanged) == (5, 0, 0)
    assert [r["id"] for r in read_jsonl(ObjectStoragePath(result.creates_path))] == [1, 2, 3, 4, 5]
    assert remote.reads == 0


def test_a_dead_letter_is_resolved_only_when_its_key_was_staged_and_needs_no_write(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "same"}, None), ({"id": 2, "title": "new"}, None)],
                    [(4, None), (5, None)], retried=["1", "2", "4", "5", "9"])
    remote = FakeRemote([{"id": 1, "title": "same"}, {"id": 2, "title": "old"}, {"id": 5, "title": "x"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    # 1 is already equal and 4 already gone: done. 2 and 5 are staged: the apply resolves them when written.
    # 9 is in no staged record (a full copy that lost it, say): it stays a dead letter.
    assert result.resolved_dead_letters == ["1", "4"]
    assert (result.updates, result.deletes) == (1, 1)


def test_a_missing_staged_file_fails_the_plan_instead_of_planning_nothing(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "new"}, None), ({"id": 2, "title": "new"}, None)], [],
                    retried=["1"])
    (folder / "a.upserts.jsonl").unlink()  # as when extract_changes ran on another worker's local disk
    remote = FakeRemote([{"id": 1, "title": "old"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    with pytest.raises(StagedFileError, match=r"a\.upserts\.jsonl does not exist, but extract_changes staged 2"):
        plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]


def test_a_short_staged_file_fails_the_plan(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [], [(4, None), (5, None)])
    write_jsonl(folder / "a.deletes.jsonl", [{"key": 4, "changed_at": None}])
    remote = FakeRemote([{"id": 4, "title": "x"}, {"id": 5, "title": "y"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    with pytest.raises(StagedFileError, match="holds 1 records, but extract_changes staged 2"):
        plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]


def test_pruning_stages_a_dead_lettered_delete_once(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "kept"}, None)], [(7, None)], retried=["7"])
    write_jsonl(folder / "a.source_keys.jsonl", ["1"])
    changes.source_keys_path = str(folder / "a.source_keys.jsonl")
    remote = FakeRemote([{"id": 1, "title": "kept"}, {"id": 7, "title": "refused"}, {"id": 8, "title": "stray"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard,  # type: ignore[arg-type]
                             prune_remote=True)
    # The dead letter is a delete; the stray key a prune, which the apply checks on the source again.
    assert list(read_jsonl(ObjectStoragePath(result.deletes_path))) == [7]
    assert result.prunes_path is not None
    assert list(read_jsonl(ObjectStoragePath(result.prunes_path))) == [8]
    assert (result.deletes, result.prunes) == (1, 1)
    assert result.resolved_dead_letters == []


def test_without_pruning_no_prunes_are_staged(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "kept"}, None)], [])
    remote = FakeRemote([{"id": 1, "title": "kept"}, {"id": 8, "title": "stray"}])
    guard = ConflictGuard(remote, "sync", source_wins_ties=True)  # type: ignore[arg-type]
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.deletes, result.prunes, result.prunes_path) == (0, 0, None)
