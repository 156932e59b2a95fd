"""Request batches are bounded by item count and by body size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import ObjectStoragePath

from directus_sync.directus.client import encode_json
from directus_sync.directus.errors import DirectusError
from directus_sync.engine import origins
from directus_sync.engine.apply import Applier, request_batches
from directus_sync.engine.origins import Origin
from directus_sync.engine.plan import CollectionPlan
from directus_sync.engine.staging import StagedFileError, write_jsonl
from directus_sync.state import tables


def body_size(batch: list[dict[str, object]]) -> int:
    return len(encode_json(batch))


def test_batches_respect_the_count() -> None:
    batches = list(request_batches(({"id": n} for n in range(10)), max_count=4, max_bytes=10_000))
    assert [len(b) for b in batches] == [4, 4, 2]


def test_batches_respect_the_body_size() -> None:
    items = [{"id": n, "body": "x" * 300} for n in range(20)]
    batches = list(request_batches(items, max_count=100, max_bytes=1_000))
    assert sum(len(b) for b in batches) == 20
    assert all(body_size(b) <= 1_000 for b in batches)
    assert [item for b in batches for item in b] == items


def test_an_item_larger_than_the_limit_travels_alone() -> None:
    items = [{"id": 1}, {"id": 2, "body": "x" * 5_000}, {"id": 3}]
    assert [len(b) for b in request_batches(items, max_count=10, max_bytes=1_000)] == [1, 1, 1]


def test_a_budget_lowered_meanwhile_applies_to_the_next_batch() -> None:
    budget = [10_000]
    items = ({"id": n, "body": "x" * 90} for n in range(40))
    sizes = []
    for batch in request_batches(items, max_count=100, max_bytes=lambda: budget[0]):
        sizes.append(body_size(batch))
        budget[0] = 1_000
    assert sizes[0] > 1_000 and all(size <= 1_000 for size in sizes[1:])


def test_multibyte_text_counts_in_bytes() -> None:
    items = [{"id": n, "t": "é" * 100} for n in range(10)]
    assert all(body_size(b) <= 1_000 for b in request_batches(items, max_count=100, max_bytes=1_000))


class FakeRemote:
    """A remote whose collection refuses titles longer than 5 characters, like a tighter column would."""

    def __init__(self, existing: dict[int, dict[str, Any]] | None = None) -> None:
        self.items: dict[int, dict[str, Any]] = dict(existing or {})
        self.requests = 0

    def _check(self, items: list[dict[str, Any]]) -> None:
        self.requests += 1
        if too_long := [i for i in items if len(str(i.get("title", ""))) > 5]:
            raise DirectusError.from_errors("remote", "POST", "/items/a", 400, [{
                "message": f'Value "{too_long[0]["title"]}" for field "title" in collection "a" is too long.',
                "extensions": {"code": "VALUE_TOO_LONG", "collection": "a", "field": "title",
                               "value": too_long[0]["title"]}}])

    def create_items(self, collection: str, pk: str, items: list[dict[str, Any]]) -> None:
        self._check(items)
        if any(i["id"] in self.items for i in items):
            raise DirectusError("remote", "POST", "/items/a", 400, "Value for field id has to be unique")
        self.items.update({i["id"]: dict(i) for i in items})

    def update_items(self, collection: str, pk: str, items: list[dict[str, Any]]) -> None:
        self._check(items)
        if any(i["id"] not in self.items for i in items):
            raise DirectusError("remote", "PATCH", "/items/a", 403, "Forbidden")
        for i in items:
            self.items[i["id"]].update(i)

    def delete_items(self, collection: str, keys: list[Any]) -> None:
        self.requests += 1
        if any(k not in self.items for k in keys):
            raise DirectusError("remote", "DELETE", "/items/a", 403, "Forbidden")
        for k in keys:
            del self.items[k]

    def read_items(self, collection: str, pk: str, keys: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        return [{"id": k} for k in keys if int(k) in self.items]


def plan_with(tmp_path: Path, creates: list[Any] = (), updates: list[Any] = (), deletes: list[Any] = ()
              ) -> CollectionPlan:
    paths = {name: ObjectStoragePath(f"file://{tmp_path}/{name}.jsonl") for name in ("c", "u", "d")}
    write_jsonl(paths["c"], creates)
    write_jsonl(paths["u"], updates)
    write_jsonl(paths["d"], deletes)
    return CollectionPlan(collection="a", pk="id", fields=["id", "title"], creates_path=str(paths["c"]),
                          updates_path=str(paths["u"]), deletes_path=str(paths["d"]), creates=len(creates),
                          updates=len(updates), deletes=len(deletes))


def test_a_refused_item_is_isolated_and_every_other_item_is_written(tmp_path: Path) -> None:
    items = [{"id": n, "title": "ok"} for n in range(1, 41)]
    items[16]["title"] = "far too long"
    remote = FakeRemote()
    outcome = Applier(remote, plan_with(tmp_path, creates=items)).run("create", max_count=40)  # type: ignore[arg-type]
    assert sorted(remote.items) == [n for n in range(1, 41) if n != 17]
    assert [(f.key, f.action) for f in outcome.failures] == [("17", "create")]
    # The dead letter names the code, field and collection, never the value Directus quoted.
    assert 'VALUE_TOO_LONG: field "title" in collection "a" is too long' in outcome.failures[0].error
    assert "far too long" not in outcome.failures[0].error
    assert outcome.written == 39
    assert remote.requests <= 2 * 6 + 1  # bisection, not one request per item


def test_creates_whose_keys_exist_become_updates_and_gone_deletes_are_done(tmp_path: Path) -> None:
    remote = FakeRemote({1: {"id": 1, "title": "old"}, 3: {"id": 3, "title": "x"}})
    plan = plan_with(tmp_path, creates=[{"id": 1, "title": "new"}, {"id": 2, "title": "two"}], deletes=[3, 4])
    created = Applier(remote, plan).run("create", max_count=10)  # type: ignore[arg-type]
    deleted = Applier(remote, plan).run("delete", max_count=10)  # type: ignore[arg-type]
    assert remote.items == {1: {"id": 1, "title": "new"}, 2: {"id": 2, "title": "two"}}
    assert (created.written, created.failures) == (2, [])
    assert (deleted.written, deleted.failures) == (2, [])


def test_updates_of_keys_gone_from_the_remote_are_created(tmp_path: Path) -> None:
    remote = FakeRemote({1: {"id": 1, "title": "old"}})
    plan = plan_with(tmp_path, updates=[
        {"key": 1, "changes": {"title": "new"}, "item": {"id": 1, "title": "new"}},
        {"key": 2, "changes": {"title": "back"}, "item": {"id": 2, "title": "back"}}])
    outcome = Applier(remote, plan, watch_keys={"2"}).run("update", max_count=10)  # type: ignore[arg-type]
    assert remote.items == {1: {"id": 1, "title": "new"}, 2: {"id": 2, "title": "back"}}
    assert outcome.written_keys == {"2"}


def test_a_permission_error_stops_the_task_instead_of_filling_dead_letters(tmp_path: Path) -> None:
    class NoPermission(FakeRemote):
        def create_items(self, collection: str, pk: str, items: list[dict[str, Any]]) -> None:
            raise DirectusError("remote", "POST", "/items/a", 403, "Forbidden")

    with pytest.raises(DirectusError, match="403"):
        Applier(NoPermission(), plan_with(tmp_path, creates=[{"id": 1, "title": "a"}])).run(  # type: ignore[arg-type]
            "create", max_count=10)


class SmallBodyLimit(FakeRemote):
    """A remote whose MAX_PAYLOAD_SIZE is 3,000 bytes: Directus answers a larger body with a 400."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def create_items(self, collection: str, pk: str, items: list[dict[str, Any]]) -> None:
        if len(encode_json(items)) > 3_000:
            self.refused += 1
            raise DirectusError.from_errors("remote", "POST", "/items/a", 400, [{
                "message": "Invalid payload. request entity too large.",
                "extensions": {"code": "INVALID_PAYLOAD", "reason": "request entity too large"}}])
        super().create_items(collection, pk, items)


def test_a_remote_with_a_smaller_body_limit_lowers_the_budget_for_the_rest_of_the_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = [{"id": n, "title": "ok", "body": "x" * 200} for n in range(1, 2001)]  # 20 batches of 100
    remote = SmallBodyLimit()
    outcome = Applier(remote, plan_with(tmp_path, creates=items)).run(  # type: ignore[arg-type]
        "create", max_count=100, max_bytes=900_000)
    assert (outcome.written, outcome.failures) == (2000, [])
    assert sorted(remote.items) == list(range(1, 2001))
    # Only the batches cut before the first refusal are split; halving every batch would cost 140 refusals.
    assert remote.refused <= 3 * 7
    assert "sending at most" in caplog.text


def test_update_batches_are_sized_by_what_is_sent_not_by_the_staged_record(tmp_path: Path) -> None:
    # Staged updates carry the whole item (for rerouting) but send only the changed fields.
    updates = [{"key": n, "changes": {"title": "new"}, "item": {"id": n, "title": "new", "body": "x" * 400}}
               for n in range(1, 21)]
    remote = FakeRemote({n: {"id": n, "title": "old"} for n in range(1, 21)})
    sent: list[int] = []
    original = remote.update_items

    def update_items(collection: str, pk: str, items: list[dict[str, Any]]) -> None:
        sent.append(len(encode_json(items)))
        original(collection, pk, items)

    remote.update_items = update_items  # type: ignore[method-assign]
    outcome = Applier(remote, plan_with(tmp_path, updates=updates)).run(  # type: ignore[arg-type]
        "update", max_count=100, max_bytes=1_000)
    assert outcome.written == 20
    assert len(sent) == 1 and sent[0] <= 1_000  # the staged records would have needed about ten requests


def test_a_dead_lettered_delete_whose_key_is_already_gone_is_resolved(tmp_path: Path) -> None:
    remote = FakeRemote({3: {"id": 3, "title": "x"}})
    outcome = Applier(remote, plan_with(tmp_path, deletes=[3, 4]), watch_keys={"4"}).run(  # type: ignore[arg-type]
        "delete", max_count=10)
    assert remote.items == {}
    assert (outcome.written, outcome.written_keys, outcome.failures) == (2, {"4"}, [])


def test_a_missing_staged_file_fails_before_anything_is_written(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, creates=[{"id": 1, "title": "a"}, {"id": 2, "title": "b"}])
    ObjectStoragePath(plan.creates_path).unlink()
    remote = FakeRemote()
    with pytest.raises(StagedFileError, match=r"c\.jsonl does not exist, but filter_schema staged 2 records"):
        Applier(remote, plan).run("create", max_count=10)  # type: ignore[arg-type]
    assert remote.requests == 0


def test_a_short_staged_file_fails_after_writing_what_it_holds(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, deletes=[1, 2])
    write_jsonl(ObjectStoragePath(plan.deletes_path), [1])
    remote = FakeRemote({1: {"id": 1}, 2: {"id": 2}})
    with pytest.raises(StagedFileError, match="holds 1 records, but filter_schema staged 2"):
        Applier(remote, plan).run("delete", max_count=10)  # type: ignore[arg-type]


def test_pruned_keys_the_source_has_again_are_spared_and_not_counted(tmp_path: Path) -> None:
    # Planned from the source's keys at extraction: 5 and 6 were not there, 7 was never on the source.
    # Since then the source created 5 and 6, and another run copied them to the remote.
    remote = FakeRemote({n: {"id": n, "title": "x"} for n in (1, 5, 6, 7)})
    source = FakeRemote({n: {"id": n, "title": "x"} for n in (1, 5, 6)})
    plan = plan_with(tmp_path, deletes=[1])
    write_jsonl(ObjectStoragePath(f"file://{tmp_path}/p.jsonl"), [5, 6, 7])
    plan.prunes_path, plan.prunes = f"file://{tmp_path}/p.jsonl", 3
    outcome = Applier(remote, plan, source=source).run("delete", max_count=2)  # type: ignore[arg-type]
    assert sorted(remote.items) == [5, 6]
    assert (outcome.written, outcome.spared, outcome.failures) == (2, 2, [])  # the delete of 1, the prune of 7


def test_prunes_without_the_source_fail_before_deleting_them(tmp_path: Path) -> None:
    remote = FakeRemote({7: {"id": 7, "title": "x"}})
    plan = plan_with(tmp_path)
    write_jsonl(ObjectStoragePath(f"file://{tmp_path}/p.jsonl"), [7])
    plan.prunes_path, plan.prunes = f"file://{tmp_path}/p.jsonl", 1
    with pytest.raises(ValueError, match="pruning needs the source"):
        Applier(remote, plan).run("delete", max_count=2)  # type: ignore[arg-type]
    assert sorted(remote.items) == [7]


def test_only_writes_the_remote_accepted_have_their_origins_recorded(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/origins.db")
    tables.migrate(engine)
    items = [{"id": 1, "title": "ok"}, {"id": 2, "title": "far too long"}, {"id": 3, "title": "ok"}]
    carried = [origins.staged_record(i["id"], str(i["id"]), Origin.of_change("2026-11-26T12:00:00Z", "a"))
               for i in items]
    recorder = origins.Recorder(engine, "b", "a", carried)
    Applier(FakeRemote(), plan_with(tmp_path, creates=items), recorder=recorder).run(  # type: ignore[arg-type]
        "create", max_count=10)
    assert sorted(origins.recorded(engine, "b", "a", ["1", "2", "3"])) == ["1", "3"]


class RelationalRemote(FakeRemote):
    """``a.author`` references ``authors``: a value naming no author is refused as Directus does."""

    def __init__(self, authors: set[int], existing: dict[int, dict[str, Any]] | None = None) -> None:
        super().__init__(existing)
        self.authors = authors
        self.directus_conn_id = "remote"

    def _check(self, items: list[dict[str, Any]]) -> None:
        super()._check(items)
        if any(i.get("author") is not None and i["author"] not in self.authors for i in items):
            raise DirectusError.from_errors("remote", "POST", "/items/a", 400, [{
                "message": 'Invalid foreign key for field "author" in collection "a".',
                "extensions": {"code": "INVALID_FOREIGN_KEY", "collection": "a", "field": "author"}}])

    def fields(self, collection: str) -> list[dict[str, Any]]:
        return [{"field": "id", "type": "integer", "schema": {"is_primary_key": True}}]

    def read_items(self, collection: str, pk: str, keys: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        if collection == "authors":
            return [{"id": k} for k in keys if int(k) in self.authors]
        return super().read_items(collection, pk, keys, fields)


def test_an_item_referencing_a_missing_item_is_a_dead_letter_naming_the_reference(tmp_path: Path) -> None:
    remote = RelationalRemote(authors={7})
    plan = plan_with(tmp_path, creates=[{"id": 1, "title": "ok", "author": 7}, {"id": 2, "title": "ok", "author": 9}])
    plan.references = {"author": "authors"}
    outcome = Applier(remote, plan).run("create", max_count=10)  # type: ignore[arg-type]
    assert sorted(remote.items) == [1] and outcome.written == 1
    [failure] = outcome.failures
    assert failure.key == "2" and "INVALID_FOREIGN_KEY" in failure.error
    assert "references items not on the remote (author -> authors 9)" in failure.error


def test_an_update_setting_a_created_items_deferred_reference_is_not_counted_again(tmp_path: Path) -> None:
    remote = RelationalRemote(authors=set(), existing={1: {"id": 1, "title": "x"}})
    plan = plan_with(tmp_path, updates=[
        {"key": 1, "changes": {"title": "y"}, "item": {"id": 1, "title": "y"}},
        {"key": 2, "changes": {"title": "z"}, "item": {"id": 2, "title": "z"}, "deferred": True}])
    remote.items[2] = {"id": 2}  # created by apply_creates
    outcome = Applier(remote, plan).run("update", max_count=10)  # type: ignore[arg-type]
    assert remote.items[2]["title"] == "z" and outcome.written == 1


def test_a_create_without_its_deferred_reference_records_its_origin_only_once_the_reference_is_set(
        tmp_path: Path) -> None:
    """Recorded origins say what the remote has: an item still missing its parent must be written again by a
    later run if the update setting the parent never lands (a chain of instances would otherwise keep it
    without one, since the same origin is never sent twice)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/origins.db")
    tables.migrate(engine)
    origin = Origin.of_change("2026-11-26T12:00:00Z", "a")
    items = [{"id": 1, "title": "root", "parent": None}, {"id": 2, "title": "kid"}]  # 2's parent is deferred
    recorder = origins.Recorder(engine, "b", "a", [origins.staged_record(i["id"], str(i["id"]), origin)
                                                   for i in items])
    plan = plan_with(tmp_path, creates=items, updates=[
        {"key": 2, "changes": {"parent": 1}, "item": {"id": 2, "title": "kid", "parent": 1}, "deferred": True}])
    plan.deferred = ["parent"]
    remote = FakeRemote()
    Applier(remote, plan, recorder=recorder).run("create", max_count=10)  # type: ignore[arg-type]
    assert sorted(origins.recorded(engine, "b", "a", ["1", "2"])) == ["1"]
    Applier(remote, plan, recorder=recorder).run("update", max_count=10)  # type: ignore[arg-type]
    assert sorted(origins.recorded(engine, "b", "a", ["1", "2"])) == ["1", "2"]


def test_an_item_naming_a_file_the_run_could_not_copy_fails_alone_unsent(tmp_path: Path) -> None:
    """The remote may hold a row of that id without its binary (Directus creates the row first and, refusing the
    binary, cannot delete it as the sync user): its foreign key would accept the item, so it is not sent."""
    creates = [{"id": 1, "title": "big", "image": "f-big"}, {"id": 2, "title": "ok", "image": "f-ok"},
               {"id": 3, "title": "none", "image": None}]
    updates = [{"key": 4, "changes": {"image": "f-big"}, "item": {"id": 4, "image": "f-big"}},
               {"key": 5, "changes": {"title": "re"}, "item": {"id": 5, "title": "re", "image": "f-big"}}]
    plan = plan_with(tmp_path, creates=creates, updates=updates).model_copy(
        update={"references": {"image": "directus_files"}})
    remote = FakeRemote({4: {"id": 4, "image": "f-old"}, 5: {"id": 5, "image": "f-big"}})
    uncopied = {"f-big": "POST /files failed (413): CONTENT_TOO_LARGE"}
    created = Applier(remote, plan, uncopied_files=uncopied).run("create", 10)  # type: ignore[arg-type]
    assert sorted(remote.items) == [2, 3, 4, 5]
    assert [(f.key, f.action) for f in created.failures] == [("1", "create")]
    assert "image -> directus_files f-big could not be copied: POST /files failed (413)" in created.failures[0].error
    updated = Applier(remote, plan, uncopied_files=uncopied).run("update", 10)  # type: ignore[arg-type]
    # Only a change setting the file fails; an update leaving the field alone is written.
    assert [(f.key, f.action) for f in updated.failures] == [("4", "update")]
    assert remote.items[4]["image"] == "f-old" and remote.items[5]["title"] == "re"


def test_an_update_rerouted_to_a_create_does_not_write_an_item_naming_an_uncopied_file(tmp_path: Path) -> None:
    """A created item's deferred references (a self-reference, a cycle) travel as an update; when its create
    failed for an uncopied file, that update finds no item and is rerouted to a create of the whole item, which
    names the file: it must fail too, not write the item naming a file without a binary (nor clear its letter)."""
    creates = [{"id": 1, "title": "kid", "image": "f-big"}]  # parent deferred
    updates = [{"key": 1, "changes": {"parent": 2}, "item": {"id": 1, "title": "kid", "image": "f-big", "parent": 2},
                "deferred": True},
               {"key": 3, "changes": {"title": "back"}, "item": {"id": 3, "title": "back", "image": "f-big"}}]
    plan = plan_with(tmp_path, creates=creates, updates=updates).model_copy(
        update={"references": {"image": "directus_files", "parent": "a"}, "deferred": ["parent"]})
    remote = FakeRemote({2: {"id": 2}})
    uncopied = {"f-big": "POST /files failed (413): CONTENT_TOO_LARGE"}
    created = Applier(remote, plan, uncopied_files=uncopied).run("create", 10)  # type: ignore[arg-type]
    assert [(f.key, f.action) for f in created.failures] == [("1", "create")]
    updated = Applier(remote, plan, watch_keys={"1", "3"},
                      uncopied_files=uncopied).run("update", 10)  # type: ignore[arg-type]
    assert sorted(remote.items) == [2]
    assert sorted(f.key for f in updated.failures) == ["1", "3"]
    assert updated.written_keys == set()
