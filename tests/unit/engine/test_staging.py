"""Staged files: JSON lines written in chunks and read back in order, whatever their size, and only where every
task of a run can read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from directus_sync.engine.staging import (
    SHARED_ENV,
    STAGING_URL_ENV,
    JsonlWriter,
    StagedFileError,
    StagingNotShared,
    batched_by_size,
    executor_names,
    read_jsonl,
    read_staged,
    read_staged_sized,
    require_shared,
    sharing_problem,
    staged_batches,
    write_jsonl,
)


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
    assert list(batched_by_size(range(5), 2, 1_000, lambda _: 1)) == [[0, 1], [2, 3], [4]]


def test_batches_are_cut_at_the_byte_budget_and_a_record_over_it_goes_alone() -> None:
    sizes = [300, 300, 300, 2_000, 100, 600, 500]
    batches = list(batched_by_size(sizes, 100, 1_000, lambda size: size))
    assert batches == [[300, 300, 300], [2_000], [100, 600], [500]]
    assert [b for b in batches if sum(b) > 1_000] == [[2_000]]


def test_a_budget_lowered_meanwhile_applies_to_the_next_batch() -> None:
    budget = [1_000]
    batches = []
    for batch in batched_by_size([100] * 30, 100, lambda: budget[0], lambda size: size):
        batches.append(len(batch))
        budget[0] = 300
    assert batches[:2] == [10, 3]


def test_staged_records_come_with_their_line_size_and_in_batches_within_the_budget(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/run/a.upserts.jsonl")
    records = [{"id": n, "body": "x" * (100 if n % 2 else 5_000)} for n in range(40)]
    write_jsonl(path, records)
    sized = list(read_staged_sized(path, 40, "extract_changes"))
    assert [record for record, _ in sized] == records
    assert [size for _, size in sized] == [len(json.dumps(r, separators=(",", ":"))) + 1 for r in records]
    batches = list(staged_batches(path, 40, "extract_changes", max_items=1_000, max_bytes=12_000))
    assert [r for batch in batches for r in batch] == records
    assert all(sum(len(json.dumps(r)) for r in batch) <= 12_000 for batch in batches)
    assert len(batches) == 10


def test_a_missing_staged_file_fails_before_a_record_is_read(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/run/a.upserts.jsonl")
    with pytest.raises(StagedFileError) as error:
        read_staged(path, 3, "extract_changes")  # no iteration: callers act on nothing before it fails
    message = str(error.value)
    assert f"the staged file {path} does not exist, but extract_changes staged 3 records in it" in message
    assert "set DIRECTUS_SYNC_STAGING_URL to storage every worker reaches" in message


def test_a_short_staged_file_fails_once_read_to_its_end(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/a.creates.jsonl")
    write_jsonl(path, [1, 2])
    records = read_staged(path, 5, "filter_schema")
    assert [next(records), next(records)] == [1, 2]  # read once, as it goes
    with pytest.raises(StagedFileError, match="holds 2 records, but filter_schema staged 5 in it: it was cut short"):
        next(records)


def test_a_staged_file_with_more_records_than_counted_fails_too(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/a.deletes.jsonl")
    write_jsonl(path, [1, 2, 3])
    with pytest.raises(StagedFileError, match="holds 3 records, but filter_schema staged 2"):
        list(read_staged(path, 2, "filter_schema"))


def test_a_staged_file_holding_what_was_counted_reads_back_whole(tmp_path: Path) -> None:
    path = ObjectStoragePath(f"file://{tmp_path}/a.updates.jsonl")
    write_jsonl(path, [{"key": 1}, {"key": 2}])
    assert list(read_staged(path, 2, "filter_schema")) == [{"key": 1}, {"key": 2}]
    assert list(read_staged(ObjectStoragePath(f"file://{tmp_path}/none.jsonl"), 0, "filter_schema")) == []


LOCAL_ROOTS = [ObjectStoragePath("file:///opt/airflow/staging"), ObjectStoragePath("/opt/airflow/staging")]


@pytest.mark.parametrize("root", LOCAL_ROOTS, ids=str)
@pytest.mark.parametrize("executor", ["CeleryExecutor", "airflow.providers.cncf.kubernetes.executors."
                                      "kubernetes_executor.KubernetesExecutor", "LocalExecutor,CeleryExecutor",
                                      "edge:airflow.providers.edge3.executors.EdgeExecutor"])
def test_local_staging_is_refused_when_tasks_may_run_on_other_machines(
        root: ObjectStoragePath, executor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_ENV, raising=False)
    problem = sharing_problem(root, executor_names(executor))
    assert problem is not None
    assert str(root) in problem and STAGING_URL_ENV in problem and SHARED_ENV in problem


def test_local_staging_is_fine_with_the_local_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_ENV, raising=False)
    assert sharing_problem(LOCAL_ROOTS[0], executor_names("LocalExecutor")) is None
    assert sharing_problem(LOCAL_ROOTS[0], executor_names("airflow.executors.local_executor.LocalExecutor")) is None


def test_object_storage_and_a_folder_declared_shared_are_fine_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_ENV, raising=False)
    assert sharing_problem(ObjectStoragePath("s3://aws_default@bucket/staging"), ["CeleryExecutor"]) is None
    monkeypatch.setenv(SHARED_ENV, "true")
    assert sharing_problem(LOCAL_ROOTS[0], ["CeleryExecutor"]) is None


def test_the_configured_executor_is_read_from_airflows_configuration(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setenv(STAGING_URL_ENV, f"file://{tmp_path}")
    monkeypatch.delenv(SHARED_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(StagingNotShared, match="CeleryExecutor"):
        require_shared()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    require_shared()
