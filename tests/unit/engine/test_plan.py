"""Planning compares staged source items with the remote and stages only real differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import ObjectStoragePath

from directus_sync.config import ConflictPolicy
from directus_sync.directus.activity import parse_timestamp
from directus_sync.directus.schema import CollectionShape
from directus_sync.engine import origins
from directus_sync.engine.extract import CollectionChanges
from directus_sync.engine.origins import Origin
from directus_sync.engine.plan import ConflictGuard, Instance, plan_collection
from directus_sync.engine.staging import StagedFileError, read_jsonl, write_jsonl
from directus_sync.state import tables


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


def guard_for(tmp_path: Path, remote: FakeRemote, source: FakeRemote | None = None,
              policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS, names: tuple[str, str] = ("a", "b"),
              ) -> ConflictGuard:
    """A guard between ``source`` (instance "a") and ``remote`` ("b"), origins kept in an SQLite file."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/origins.db")
    tables.migrate(engine)
    return ConflictGuard(Instance(source or FakeRemote([]), names[0], "sync"),  # type: ignore[arg-type]
                         Instance(remote, names[1], "sync"), engine, policy)  # type: ignore[arg-type]


def carried(result: Any) -> dict[str, tuple[str, str]]:
    """The origins file of a plan: key -> (origin time, origin instance)."""
    return {r["key"]: (r["at"], r["instance"]) for r in read_jsonl(ObjectStoragePath(result.origins_path))}


def oldest(times: Any) -> str | None:
    return min(times, key=parse_timestamp, default=None)


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
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=2, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.unchanged) == (1, 1, 1, 1)
    assert list(read_jsonl(ObjectStoragePath(result.creates_path))) == [{"id": 3, "title": "brand new"}]
    assert list(read_jsonl(ObjectStoragePath(result.updates_path))) == [
        {"key": 2, "changes": {"title": "new title"}, "item": {"id": 2, "title": "new title"}}]
    assert list(read_jsonl(ObjectStoragePath(result.deletes_path))) == [4]
    assert remote.reads == 3  # two batches of upserts, one of deletes
    assert result.first_keys == ["2", "3", "4"]  # what a failure report names, with no file to read


def test_a_newer_change_on_the_remote_wins(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "older on source"}, "2026-11-26T12:00:00.000Z"),
                             ({"id": 2, "title": "newer on source"}, "2026-11-26T12:10:00.000Z"),
                             ({"id": 3, "title": "deleted on remote later"}, "2026-11-26T12:00:00.000Z")],
                    [(4, "2026-11-26T12:00:00.000Z")])
    remote = FakeRemote([{"id": 1, "title": "edited on remote"}, {"id": 2, "title": "x"}, {"id": 4, "title": "kept"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z", "2": "2026-11-26T12:05:00.000Z",
                         "3": "2026-11-26T12:05:00.000Z", "4": "2026-11-26T12:05:00.000Z"}
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.conflicts) == (0, 1, 0, 3)
    assert [r["key"] for r in read_jsonl(ObjectStoragePath(result.updates_path))] == [2]


def test_equal_times_go_to_the_instance_named_last_in_both_directions(tmp_path: Path) -> None:
    same_time = "2026-11-26T12:00:00.000Z"
    outcomes = []
    for names in (("a", "b"), ("b", "a")):
        folder = ObjectStoragePath(f"file://{tmp_path}/{names[0]}")
        changes = stage(folder, [({"id": 1, "title": f"made on {names[0]}"}, same_time)], [])
        remote = FakeRemote([{"id": 1, "title": f"made on {names[1]}"}])
        remote.changed_at = {"1": same_time}
        (tmp_path / names[0]).mkdir(exist_ok=True)
        guard = guard_for(tmp_path / names[0], remote, names=names)
        outcomes.append(plan_collection(remote, changes, SHAPE, folder, 10, guard).updates)  # type: ignore[arg-type]
    assert outcomes == [0, 1]  # b's value wins both ways


def test_source_wins_overwrites_a_newer_remote_change_and_still_records_it(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "older on source"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "edited on remote"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z"}
    guard = guard_for(tmp_path, remote, policy=ConflictPolicy.SOURCE_WINS)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.updates, result.conflicts) == (1, 1)
    assert [(c.key, c.winner) for c in guard.conflicts] == [("1", "source")]


def test_a_remote_nobody_else_changed_since_the_source_did_is_not_read_for_conflicts(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": k, "title": "new"}, "2026-11-26T12:00:00.000Z") for k in (1, 2, 3)],
                    [(4, "2026-11-26T12:01:00.000Z")])
    remote = FakeRemote([{"id": 1, "title": "old"}, {"id": 4, "title": "gone soon"}])
    remote.changed_at = {"1": "2026-11-26T11:00:00.000Z"}  # edited on the remote before the source's change
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=1, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.deletes, result.conflicts) == (2, 1, 1, 0)
    assert remote.conflict_reads == 0  # one check for the collection instead of a read per batch


def test_a_remote_change_at_the_source_changes_own_time_is_still_checked_key_by_key(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "mine"}, "2026-11-26T12:00:00.000Z"),
                             ({"id": 2, "title": "mine"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "theirs"}, {"id": 2, "title": "theirs"}])
    remote.changed_at = {"2": "2026-11-26T12:00:00.000Z"}
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.updates, result.conflicts) == (1, 1)
    assert [c.key for c in guard.conflicts] == ["2"]


def test_a_first_copy_to_an_empty_collection_stages_creates_without_reading_each_batch(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": k, "title": f"item {k}"}, None) for k in range(1, 6)], [])
    remote = FakeRemote([])
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=2, guard=guard)  # type: ignore[arg-type]

    assert (result.creates, result.updates, result.unchanged) == (5, 0, 0)
    assert [r["id"] for r in read_jsonl(ObjectStoragePath(result.creates_path))] == [1, 2, 3, 4, 5]
    assert remote.reads == 0


def test_a_dead_letter_is_resolved_only_when_its_key_was_staged_and_needs_no_write(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "same"}, None), ({"id": 2, "title": "new"}, None)],
                    [(4, None), (5, None)], retried=["1", "2", "4", "5", "9"])
    remote = FakeRemote([{"id": 1, "title": "same"}, {"id": 2, "title": "old"}, {"id": 5, "title": "x"}])
    guard = guard_for(tmp_path, remote)
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
    guard = guard_for(tmp_path, remote)
    with pytest.raises(StagedFileError, match=r"a\.upserts\.jsonl does not exist, but extract_changes staged 2"):
        plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]


def test_a_short_staged_file_fails_the_plan(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [], [(4, None), (5, None)])
    write_jsonl(folder / "a.deletes.jsonl", [{"key": 4, "changed_at": None}])
    remote = FakeRemote([{"id": 4, "title": "x"}, {"id": 5, "title": "y"}])
    guard = guard_for(tmp_path, remote)
    with pytest.raises(StagedFileError, match="holds 1 records, but extract_changes staged 2"):
        plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]


def test_pruning_stages_a_dead_lettered_delete_once(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "kept"}, None)], [(7, None)], retried=["7"])
    write_jsonl(folder / "a.source_keys.jsonl", ["1"])
    changes.source_keys_path = str(folder / "a.source_keys.jsonl")
    remote = FakeRemote([{"id": 1, "title": "kept"}, {"id": 7, "title": "refused"}, {"id": 8, "title": "stray"}])
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard,  # type: ignore[arg-type]
                             prune_remote=True)
    # The dead letter is a delete; the stray key a prune, which the apply checks on the source again.
    assert list(read_jsonl(ObjectStoragePath(result.deletes_path))) == [7]
    assert result.prunes_path is not None
    assert list(read_jsonl(ObjectStoragePath(result.prunes_path))) == [8]
    assert (result.deletes, result.prunes) == (1, 1)
    assert result.resolved_dead_letters == []


def test_a_value_another_sync_brought_with_a_newer_origin_is_kept(tmp_path: Path) -> None:
    # C's edit reached B through C->B; A's older edit must not overwrite it, though B's log shows only the sync.
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "older edit on a"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "newer edit on c"}])
    guard = guard_for(tmp_path, remote)
    origins.record(guard.engine, "b", "a", {"1": Origin.of_change("2026-11-26T12:05:00.000Z", "c")})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.updates, result.conflicts) == (0, 1)
    assert [(c.key, c.winner) for c in guard.conflicts] == [("1", "remote")]


def test_a_value_passed_on_keeps_its_origin_on_the_next_instance(tmp_path: Path) -> None:
    # B forwards to C a value that came from A: B's log shows only the sync, its origin is A's edit.
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "edit from a"}, None)], [])
    remote = FakeRemote([{"id": 1, "title": "edit on c"}])
    remote.changed_at = {"1": "2026-11-26T12:03:00.000Z"}
    guard = guard_for(tmp_path, remote)
    origins.record(guard.engine, "a", "a", {"1": Origin.of_change("2026-11-26T12:05:00.000Z", "z")})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.updates, result.conflicts) == (1, 0)
    assert carried(result) == {"1": ("2026-11-26T12:05:00+00:00", "z")}


def test_a_full_copy_keeps_a_newer_remote_edit_and_records_the_conflict(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "source"}, None), ({"id": 2, "title": "source"}, None)], [])
    source = FakeRemote([])
    source.changed_at = {"1": "2026-11-26T12:00:00.000Z", "2": "2026-11-26T12:10:00.000Z"}
    remote = FakeRemote([{"id": 1, "title": "remote"}, {"id": 2, "title": "remote"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z", "2": "2026-11-26T12:05:00.000Z"}
    guard = guard_for(tmp_path, remote, source)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert [r["key"] for r in read_jsonl(ObjectStoragePath(result.updates_path))] == [2]
    assert [(c.key, c.source_at, c.winner) for c in guard.conflicts] == [("1", "2026-11-26T12:00:00+00:00", "remote")]


def test_a_full_copy_keeps_a_remote_edit_the_source_shows_no_change_against(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "source, imported without activity"}, None)], [])
    remote = FakeRemote([{"id": 1, "title": "remote edit"}])
    remote.changed_at = {"1": "2026-11-26T12:05:00.000Z"}
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert (result.updates, result.conflicts) == (0, 1)
    assert guard.conflicts[0].source_at is None


def test_a_remote_holding_a_newer_recorded_origin_is_not_quiet(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "mine"}, "2026-11-26T12:00:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "theirs"}])
    guard = guard_for(tmp_path, remote)
    origins.record(guard.engine, "b", "a", {"1": Origin.of_change("2026-11-26T12:01:00.000Z", "c")})
    plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert "a" not in guard.quiet and len(guard.conflicts) == 1


def test_each_staged_write_carries_its_origin_and_nothing_is_recorded_before_the_apply(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "new"}, "2026-11-26T12:00:00.000Z")],
                    [(4, "2026-11-26T12:01:00.000Z")])
    remote = FakeRemote([{"id": 1, "title": "old"}, {"id": 4, "title": "gone soon"}])
    guard = guard_for(tmp_path, remote)
    origins.record(guard.engine, "b", "a", {"1": Origin.of_change("2026-11-25T12:00:00.000Z", "c")})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]

    assert carried(result) == {"1": ("2026-11-26T12:00:00+00:00", "a"), "4": ("2026-11-26T12:01:00+00:00", "a")}
    # The remote holds the old value until the apply step writes it: its recorded origin stays.
    before = Origin.of_change("2026-11-25T12:00:00.000Z", "c")
    assert origins.recorded(guard.engine, "b", "a", ["1", "4"]) == {"1": before}


def test_the_same_change_is_not_written_back_to_where_it_came_from(tmp_path: Path) -> None:
    # B got A's edit through A->B; B's copy differs (B rewrote a field on write). B->A must not write it back.
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "a's edit, as b stored it"}, None)], [])
    remote = FakeRemote([{"id": 1, "title": "a's edit"}])
    remote.changed_at = {"1": "2026-11-26T12:00:00.000Z"}
    guard = guard_for(tmp_path, remote, names=("b", "a"))
    origins.record(guard.engine, "b", "a", {"1": Origin.of_change("2026-11-26T12:00:00.000Z", "a")})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.updates, result.conflicts) == (0, 0)


def test_the_same_change_is_written_again_from_where_it_was_made(tmp_path: Path) -> None:
    # Drift: B's copy of A's edit was changed past Directus (no activity). A's reconcile repairs it.
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "a's edit"}, None)], [])
    source = FakeRemote([])
    source.changed_at = {"1": "2026-11-26T12:00:00.000Z"}
    remote = FakeRemote([{"id": 1, "title": "drifted"}])
    guard = guard_for(tmp_path, remote, source)
    origins.record(guard.engine, "b", "a", {"1": Origin.of_change("2026-11-26T12:00:00.000Z", "a")})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.updates, result.conflicts) == (1, 0)


def test_values_with_no_known_origin_on_either_side_settle_the_same_way_in_both_directions(tmp_path: Path) -> None:
    outcomes = []
    for names in (("a", "b"), ("b", "a")):
        (tmp_path / names[0]).mkdir()
        folder = ObjectStoragePath(f"file://{tmp_path}/{names[0]}")
        changes = stage(folder, [({"id": 1, "title": f"loaded into {names[0]}"}, None)], [])
        remote = FakeRemote([{"id": 1, "title": f"loaded into {names[1]}"}])
        guard = guard_for(tmp_path / names[0], remote, names=names)
        # Two runs swapped the values both instances were loaded with (no change either instance shows).
        origins.record(guard.engine, names[1], "a", {"1": Origin(origins.UNKNOWN_TIME, names[0])})
        origins.record(guard.engine, names[0], "a", {"1": Origin(origins.UNKNOWN_TIME, names[1])})
        outcomes.append(plan_collection(remote, changes, SHAPE, folder, 10, guard).updates)  # type: ignore[arg-type]
    assert sorted(outcomes) == [0, 1]


def test_without_pruning_no_prunes_are_staged(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "kept"}, None)], [])
    remote = FakeRemote([{"id": 1, "title": "kept"}, {"id": 8, "title": "stray"}])
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.deletes, result.prunes, result.prunes_path) == (0, 0, None)


def test_a_remote_value_made_on_the_source_is_replaced_even_when_the_sources_log_no_longer_shows_why(
        tmp_path: Path) -> None:
    # The source changed the item after the sync copied it, but its log lost the change (horizon) or
    # stamped it earlier (a clock that went back): what the source holds now is still its later value.
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "edited long ago"}, None),
                             ({"id": 2, "title": "edited by a slow clock"}, "2026-11-26T11:30:00.000Z")], [])
    remote = FakeRemote([{"id": 1, "title": "copied"}, {"id": 2, "title": "copied"}])
    guard = guard_for(tmp_path, remote)
    copied = Origin.of_change("2026-11-26T12:00:00.000Z", "a")
    origins.record(guard.engine, "b", "a", {"1": copied, "2": copied})
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=10, guard=guard)  # type: ignore[arg-type]
    assert (result.updates, result.conflicts) == (2, 0)


def test_planning_reads_in_batches_within_the_byte_budget_whatever_the_batch_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIRECTUS_SYNC_BATCH_BYTES", "12KiB")
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": n, "title": "x" * 5_000}, None) for n in range(10)], [])
    remote = FakeRemote([{"id": n, "title": "old"} for n in range(10)])
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=1_000, guard=guard)  # type: ignore[arg-type]

    assert result.updates == 10
    assert remote.reads == 5  # two 5 kB items per 12 KiB batch


# -- references between collections (see engine/order.py) ----------------------------------------------------

PAGES = CollectionShape("a", "id", "integer", ("title", "parent"), references=(("parent", "a"),))


def test_a_create_leaves_its_deferred_references_to_an_update_after_the_creates(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "root", "parent": None}, None),
                             ({"id": 2, "title": "child", "parent": 1}, None),
                             ({"id": 3, "title": "moved", "parent": 1}, None)], [])
    remote = FakeRemote([{"id": 3, "title": "moved", "parent": None}])
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, PAGES, folder, 10, guard, deferred=("parent",))  # type: ignore[arg-type]

    assert result.deferred == ["parent"] and result.references == {"parent": "a"}
    # The child is created without its parent (which may be created in the same batch), then set.
    assert list(read_jsonl(ObjectStoragePath(result.creates_path))) == [
        {"id": 1, "title": "root", "parent": None}, {"id": 2, "title": "child"}]
    assert list(read_jsonl(ObjectStoragePath(result.updates_path))) == [
        {"key": 2, "changes": {"parent": 1}, "item": {"id": 2, "title": "child", "parent": 1}, "deferred": True},
        {"key": 3, "changes": {"parent": 1}, "item": {"id": 3, "title": "moved", "parent": 1}}]
    assert (result.creates, result.updates) == (2, 2)


def test_the_plan_lists_collections_in_write_order_whatever_the_extraction_order(tmp_path: Path) -> None:
    from directus_sync.engine.extract import ChangeManifest
    from directus_sync.engine.plan import plan

    folder = ObjectStoragePath(f"file://{tmp_path}")
    a = stage(folder, [({"id": 1, "title": "article", "author": 7}, None)], [])
    manifest = ChangeManifest(run_folder=str(folder), window="w", full=False, collections=[
        a, CollectionChanges(collection="authors", pk="id", fields=["id"], upserts=0, deletes=0,
                             upserts_path=str(folder / "none.jsonl"), deletes_path=str(folder / "none.jsonl"))])
    shapes = {"a": CollectionShape("a", "id", "integer", ("title", "author"), references=(("author", "authors"),)),
              "authors": CollectionShape("authors", "id", "integer", ("name",))}
    remote = FakeRemote([])
    result = plan(remote, manifest, shapes, 10, guard_for(tmp_path, remote))  # type: ignore[arg-type]
    assert [c.collection for c in result.collections] == ["authors", "a"]
    assert result.collections[1].references == {"author": "authors"} and result.collections[1].deferred == []


IMAGES = CollectionShape("a", "id", "integer", ("title", "image"), references=(("image", "directus_files"),))


def test_with_release_files_the_files_the_remote_held_before_updates_and_deletes_are_staged(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "new image", "image": "f-new"}, None),
                             ({"id": 2, "title": "retitled", "image": "f-kept"}, None),
                             ({"id": 3, "title": "created", "image": "f-3"}, None)],
                    [(4, None), (5, None)])
    remote = FakeRemote([{"id": 1, "title": "old", "image": "f-old"}, {"id": 2, "title": "old", "image": "f-kept"},
                         {"id": 4, "title": "deleted", "image": "f-deleted"}])
    result = plan_collection(remote, changes, IMAGES, folder, 10, guard_for(tmp_path, remote),  # type: ignore[arg-type]
                             release_files=True)
    # The image replaced and the deleted item's image; not one still held, nor a create's, nor an absent key's.
    assert list(read_jsonl(ObjectStoragePath(result.released_files_path))) == ["f-old", "f-deleted"]
    assert result.released_files == 2


def test_without_release_files_or_a_file_field_nothing_is_released(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "new", "image": "f-new"}, None)], [(4, None)])
    remote = FakeRemote([{"id": 1, "title": "old", "image": "f-old"}, {"id": 4, "title": "x", "image": "f-4"}])
    plain = plan_collection(remote, changes, IMAGES, folder, 10, guard_for(tmp_path, remote))  # type: ignore[arg-type]
    assert (plain.released_files_path, plain.released_files) == (None, 0)
    no_files = plan_collection(remote, changes, SHAPE, folder, 10, guard_for(tmp_path, remote),  # type: ignore[arg-type]
                               release_files=True)
    assert (no_files.released_files_path, no_files.released_files) == (None, 0)


def test_a_file_kept_by_the_remotes_newer_change_is_not_released(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [({"id": 1, "title": "new", "image": "f-new"}, "2026-01-01T00:00:00Z")],
                    [(4, "2026-01-01T00:00:00Z")])
    remote = FakeRemote([{"id": 1, "title": "old", "image": "f-old"}, {"id": 4, "title": "x", "image": "f-4"}])
    remote.changed_at = {"1": "2026-02-01T00:00:00Z", "4": "2026-02-01T00:00:00Z"}
    result = plan_collection(remote, changes, IMAGES, folder, 10, guard_for(tmp_path, remote),  # type: ignore[arg-type]
                             release_files=True)
    assert (result.updates, result.deletes, result.released_files) == (0, 0, 0)
