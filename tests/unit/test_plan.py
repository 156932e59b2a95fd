"""Planning compares staged source items with the remote and stages only real differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath
from directus_sync.extract import CollectionChanges
from directus_sync.plan import plan_collection
from directus_sync.schema import CollectionShape
from directus_sync.staging import read_jsonl, write_jsonl


class FakeRemote:
    """Holds items by key and answers ``read_items`` as Directus does (missing keys are absent)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = {str(i["id"]): i for i in items}
        self.reads = 0

    def read_items(self, collection: str, pk: str, keys: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        self.reads += 1
        return [{f: self.items[str(k)].get(f) for f in fields} for k in keys if str(k) in self.items]


def test_creates_updates_unchanged_and_deletes_are_told_apart(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}")
    write_jsonl(folder / "a.upserts.jsonl", [
        {"id": 1, "title": "same", "secret": "x"},
        {"id": 2, "title": "new title", "secret": "x"},
        {"id": 3, "title": "brand new", "secret": "x"},
    ])
    write_jsonl(folder / "a.deletes.jsonl", [4, 5])
    remote = FakeRemote([{"id": 1, "title": "same"}, {"id": 2, "title": "old title"}, {"id": 4, "title": "gone"}])
    changes = CollectionChanges(collection="a", pk="id", fields=["id", "title"], upserts=3, deletes=2,
                                upserts_path=str(folder / "a.upserts.jsonl"),
                                deletes_path=str(folder / "a.deletes.jsonl"))
    result = plan_collection(remote, changes, CollectionShape("a", "id", "integer", ("title",)), folder,  # type: ignore[arg-type]
                             batch_size=2)

    assert (result.creates, result.updates, result.deletes, result.unchanged) == (1, 1, 1, 1)
    assert list(read_jsonl(ObjectStoragePath(result.creates_path))) == [{"id": 3, "title": "brand new"}]
    assert list(read_jsonl(ObjectStoragePath(result.updates_path))) == [
        {"key": 2, "changes": {"title": "new title"}, "item": {"id": 2, "title": "new title"}}]
    assert list(read_jsonl(ObjectStoragePath(result.deletes_path))) == [4]
    assert remote.reads == 3  # two batches of upserts, one of deletes
