"""The window a run reads: its data interval, widened back to the last success and by the overlap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from directus_sync.config import RemoteSource
from directus_sync.directus.paging import PageSizer
from directus_sync.engine.cursor import ActivityCursor
from directus_sync.engine.extract import Window, compute_window, extract
from directus_sync.engine.staging import read_jsonl

T = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)
OVERLAP = timedelta(seconds=60)


def test_the_first_run_copies_everything() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=None, overlap=OVERLAP)
    assert window.full
    assert window.end == T + FIVE


def test_full_resync_copies_everything_even_after_successes() -> None:
    assert compute_window(T, T + FIVE, T, OVERLAP, full_resync=True).full


def test_a_run_after_a_success_reads_its_interval_plus_the_overlap() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=T, overlap=OVERLAP)
    assert not window.full
    assert (window.start, window.end) == (T - OVERLAP, T + FIVE)


def test_after_failed_runs_the_window_reaches_back_to_the_last_success() -> None:
    last_success = T - timedelta(hours=3)
    window = compute_window(T, T + FIVE, prev_success_end=last_success, overlap=OVERLAP)
    assert window.start == last_success - OVERLAP


def test_a_replayed_old_interval_is_not_narrowed_by_a_later_success() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=T + timedelta(hours=1), overlap=OVERLAP)
    assert window.start == T - OVERLAP


def test_a_run_without_a_data_interval_starts_at_the_last_success() -> None:
    window = compute_window(None, T, prev_success_end=T - FIVE, overlap=timedelta(0))
    assert window.start == T - FIVE


class FakeSource:
    """A source holding items by key; answers the reads extraction makes as Directus does."""

    directus_conn_id = "source"

    def __init__(self, keys: list[int], activity: list[dict[str, Any]] = ()) -> None:
        self.items = {k: {"id": k, "title": f"title {k}"} for k in keys}
        self.activity = list(activity)

    def current_user_id(self) -> str:
        return "sync-user"

    def fields(self, collection: str) -> list[dict[str, Any]]:
        return [{"field": "id", "type": "integer", "schema": {"is_primary_key": True}},
                {"field": "title", "type": "string", "schema": {}}]

    def iter_items(self, collection: str, pk: str, fields: list[str], page_size: int,
                   keyset: bool = True) -> Iterator[list[dict]]:
        ordered = [self.items[k] for k in sorted(self.items)]
        for start in range(0, len(ordered), page_size):
            yield ordered[start:start + page_size]

    def read_items(self, collection: str, pk: str, keys: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        return [self.items[int(k)] for k in keys if int(k) in self.items]

    def sizer(self, collection: str, fields: list[str]) -> PageSizer:
        return PageSizer(1 << 30, first=1_000)

    def activity_page(self, collections: list[str], after_id: int, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [row for row in self.activity if row.get("id", 1) > after_id]

    # An activity log that starts at id 1 and has nothing missing: no horizon, no gaps.
    def activity_head(self) -> int:
        return len(self.activity)

    def oldest_activity(self) -> tuple[int, str] | None:
        return (1, self.activity[0]["timestamp"]) if self.activity else None

    def last_activity_before(self, timestamp: str) -> int:
        return 0

    def activity_count(self, low: int, high: int) -> int:
        return high - low + 1


REMOTE = RemoteSource.model_validate({
    "name": "a_to_b", "status": "published", "source_conn_id": "source", "remote_conn_id": "remote",
    "schema": [{"name": "a", "fields": ["title"]}], "batch_size": 2})


def staged(path: str) -> list[Any]:
    return list(read_jsonl(ObjectStoragePath(path)))


def test_a_full_copy_stages_a_dead_letter_whose_key_the_source_no_longer_has_as_a_delete(tmp_path: Path) -> None:
    source = FakeSource([1, 2, 3])
    manifest = extract(source, REMOTE, Window(None, T, full=True),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"), retry_keys={"a": {"2", "9"}})
    [changes] = manifest.collections
    assert [r["item"]["id"] for r in staged(changes.upserts_path)] == [1, 2, 3]
    # 9 was refused a delete on the remote: the copy owes it still, instead of dropping it from the plan.
    assert staged(changes.deletes_path) == [{"key": 9, "changed_at": None}]
    assert (changes.upserts, changes.deletes, changes.retried) == (3, 1, ["2", "9"])


def test_a_windowed_run_stages_dead_letters_as_their_current_state(tmp_path: Path) -> None:
    source = FakeSource([1, 2, 3], activity=[{"id": 1, "collection": "a", "item": "3",
                                             "timestamp": "2026-11-26T11:59:00Z"}])
    manifest = extract(source, REMOTE, Window(T - FIVE, T, full=False),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"), retry_keys={"a": {"2", "9"}})
    [changes] = manifest.collections
    assert sorted(r["item"]["id"] for r in staged(changes.upserts_path)) == [2, 3]
    assert staged(changes.deletes_path) == [{"key": 9, "changed_at": None}]


def test_a_full_comparison_after_a_cursor_stages_the_deletes_its_activity_shows(tmp_path: Path) -> None:
    deleted_at = "2026-11-26T11:59:00Z"
    source = FakeSource([1, 2], activity=[{"id": 1, "collection": "a", "item": "3", "timestamp": deleted_at}])
    manifest = extract(source, REMOTE, Window(None, T, full=True, reason="full_resync requested"),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"), previous=ActivityCursor(head=0, source="source"))
    [changes] = manifest.collections
    assert sorted(r["item"]["id"] for r in staged(changes.upserts_path)) == [1, 2]
    # 3 is not on the source, and the activity read since the last cursor says it was deleted.
    assert staged(changes.deletes_path) == [{"key": 3, "changed_at": deleted_at}]
    assert manifest.cursor is not None and manifest.cursor.head == 1


def test_a_cursor_kept_for_another_source_is_not_used(tmp_path: Path) -> None:
    source = FakeSource([1], activity=[{"id": 1, "collection": "a", "item": "1", "timestamp": "2026-11-26T11:59:00Z"}])
    manifest = extract(source, REMOTE, Window(T - FIVE, T, full=False),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"), previous=ActivityCursor(head=5_000, source="old"))
    assert manifest.cursor is not None and (manifest.cursor.head, manifest.cursor.source) == (1, "source")


def test_changes_the_sync_made_are_staged_to_travel_on_without_a_change_time(tmp_path: Path) -> None:
    source = FakeSource([1, 2], activity=[
        {"id": 1, "collection": "a", "item": "1", "timestamp": "2026-11-26T11:57:00Z", "user": "editor"},
        {"id": 2, "collection": "a", "item": "1", "timestamp": "2026-11-26T11:58:00Z", "user": "sync-user"},
        {"id": 3, "collection": "a", "item": "2", "timestamp": "2026-11-26T11:59:00Z", "user": "sync-user"}])
    manifest = extract(source, REMOTE, Window(T - FIVE, T, full=False),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"))
    [changes] = manifest.collections
    # 1's change time is the editor's (the sync's write carries an origin of its own); 2 has none.
    assert sorted((r["item"]["id"], r["changed_at"]) for r in staged(changes.upserts_path)) == [
        (1, "2026-11-26T11:57:00Z"), (2, None)]
    assert changes.oldest_change is None  # 2's origin is unknown here: it bounds nothing


def test_the_oldest_change_bounds_a_window_of_editors_changes(tmp_path: Path) -> None:
    source = FakeSource([1, 2], activity=[
        {"id": 1, "collection": "a", "item": "1", "timestamp": "2026-11-26T11:57:00Z", "user": "editor"},
        {"id": 2, "collection": "a", "item": "2", "timestamp": "2026-11-26T11:58:00Z", "user": None}])
    manifest = extract(source, REMOTE, Window(T - FIVE, T, full=False),  # type: ignore[arg-type]
                       ObjectStoragePath(f"file://{tmp_path}"))
    assert manifest.collections[0].oldest_change == "2026-11-26T11:57:00Z"
