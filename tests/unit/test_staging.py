"""Staged files: JSON lines written in chunks and read back in order, whatever their size."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import ObjectStoragePath

from directus_sync.staging import JsonlWriter, batched, read_jsonl, write_jsonl


def test_records_come_back_in_order_across_many_flushes(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/run/a.upserts.jsonl")
    records = [{"id": n, "body": "x" * 500, "tags": ["é", n]} for n in range(2_000)]  # about four flushes

    assert write_jsonl(path, records) == 2_000
    assert list(read_jsonl(path)) == records


def test_what_was_written_before_an_error_is_kept(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/a.deletes.jsonl")
    try:
        with JsonlWriter(path) as writer:
            writer.write(1)
            writer.write(2)
            raise RuntimeError("the source went away")
    except RuntimeError:
        pass

    assert list(read_jsonl(path)) == [1, 2]


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert list(read_jsonl(ObjectStoragePath(f"file://{tmp_path}/never-written.jsonl"))) == []


def test_batches_keep_order_and_size() -> None:
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
