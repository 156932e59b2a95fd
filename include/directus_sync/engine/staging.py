"""Staged change sets: JSON-lines files under an object-storage root, one folder per DAG run.

Change sets can hold hundreds of thousands of items, so they travel between tasks as files, and XCom
only carries their paths and counts. The root is ``DIRECTUS_SYNC_STAGING_URL``: any URL
``ObjectStoragePath`` understands (``s3://aws_default@bucket/prefix``, ``gs://...``, ``file:///...``).
With a Celery or Kubernetes worker fleet it must be storage every worker reaches; the default, a folder
under ``AIRFLOW_HOME``, suits one machine, and :func:`require_shared` refuses it under such executors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import ObjectStoragePath, conf

STAGING_URL_ENV = "DIRECTUS_SYNC_STAGING_URL"
# Set to "true" when a file:// staging root is a folder every worker mounts (NFS and the like).
SHARED_ENV = "DIRECTUS_SYNC_STAGING_SHARED"
# Executors that run every task on one machine. Airflow 3 keeps only this one; any other (Celery,
# Kubernetes, Edge, or a custom one) may start a run's tasks on different machines.
LOCAL_EXECUTORS = frozenset({"LocalExecutor"})
LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
T = TypeVar("T")


def staging_root() -> ObjectStoragePath:
    url = os.environ.get(STAGING_URL_ENV)
    if not url:
        home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
        url = f"file://{home / 'directus_sync' / 'staging'}"
    return ObjectStoragePath(url)


class StagingNotShared(ValueError):
    """Staging is on one machine's disk while the executor may run a run's tasks on several machines."""


def sharing_problem(root: ObjectStoragePath | None = None, executors: Iterable[str] | None = None) -> str | None:
    """Why the tasks of one run might not find each other's staged files, or ``None`` when they will.

    Files on a local disk are only seen by the task that wrote them if the next task runs on the same
    machine, which only a local executor promises.
    """
    root = staging_root() if root is None else root
    spread = [e for e in (configured_executors() if executors is None else executors) if e not in LOCAL_EXECUTORS]
    if not spread or root.protocol not in LOCAL_PROTOCOLS or _declared_shared():
        return None
    return (f"staging is on this machine's disk ({root}), but the executor ({', '.join(spread)}) may run a run's "
            f"tasks on different machines, where they would not find each other's files. Set {STAGING_URL_ENV} "
            f"to storage every worker reaches (s3://<connection>@<bucket>/<prefix>, gs://..., ...), or, if the "
            f"folder is a mount every worker shares (NFS), set {SHARED_ENV}=true.")


def require_shared() -> None:
    """Refuse to stage anything where another task of the run could not read it (see :func:`sharing_problem`)."""
    problem = sharing_problem()
    if problem:
        raise StagingNotShared(problem)


def configured_executors() -> list[str]:
    """The class names of the executors Airflow is configured with (``[core] executor``)."""
    return executor_names(conf.get("core", "executor"))


def executor_names(setting: str) -> list[str]:
    """``CeleryExecutor``, a dotted path, ``alias:path.Class``, or a comma-separated list of them: class names."""
    return [entry.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1] for entry in setting.split(",") if entry.strip()]


def _declared_shared() -> bool:
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes")


def run_folder(dag_id: str, run_id: str) -> ObjectStoragePath:
    """The folder holding one run's staged files."""
    return staging_root() / dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


class JsonlWriter:
    """Appends JSON documents, one a line, to a new file; counts what it wrote.

    Lines are handed to the file in chunks of about ``FLUSH_BYTES``: every call on an
    ``ObjectStoragePath`` file also goes through Airflow's lineage tracking, which is too much per line.
    """

    FLUSH_BYTES = 256 * 1024

    def __init__(self, path: ObjectStoragePath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.count = 0
        self._handle: Any = None
        self._pending: list[str] = []
        self._pending_size = 0

    def __enter__(self) -> JsonlWriter:
        self._handle = self.path.open("w")
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._flush()
        finally:
            self._handle.close()

    def write(self, record: Any) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        self._pending.append(line)
        self._pending_size += len(line)
        self.count += 1
        if self._pending_size >= self.FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._handle.write("".join(self._pending))
            self._pending, self._pending_size = [], 0


def write_jsonl(path: ObjectStoragePath, records: Iterable[Any]) -> int:
    """Write ``records`` one JSON document per line; return how many were written."""
    with JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count


def read_jsonl(path: ObjectStoragePath) -> Iterator[Any]:
    """The records of a file written by :func:`write_jsonl`; nothing when it does not exist.

    For reports only: a step that acts on a staged file reads it with :func:`read_staged`.
    """
    if not path.exists():
        return
    yield from _records(path)


class StagedFileError(RuntimeError):
    """A staged file is missing or does not hold the records the step that wrote it counted."""


LIKELY_CAUSE = (f"The likeliest cause: the run's tasks ran on different workers while staging is on local disk; "
                f"set {STAGING_URL_ENV} to storage every worker reaches (s3://..., gs://..., or a shared "
                f"file:// mount), then clear the whole DAG run so that it stages its files again.")


def read_staged(path: ObjectStoragePath, expected: int, written_by: str) -> Iterator[Any]:
    """The records of a staged file that must hold exactly ``expected`` of them.

    A missing file fails here, before the caller acts on anything; a file holding another number of
    records fails once it is read to its end. So the file is read once, however large it is, and a
    lost file can never pass for an empty change set.
    """
    return (record for record, _ in read_staged_sized(path, expected, written_by))


def read_staged_sized(path: ObjectStoragePath, expected: int, written_by: str) -> Iterator[tuple[Any, int]]:
    """As :func:`read_staged`, each record with the length of its JSON line (its size in bytes: the lines
    are ASCII), for cutting batches by size without encoding the records again."""
    if expected > 0 and not path.exists():
        raise StagedFileError(
            f"the staged file {path} does not exist, but {written_by} staged {expected} records in it. "
            f"{LIKELY_CAUSE}")
    return _counted(path, expected, written_by)


def _counted(path: ObjectStoragePath, expected: int, written_by: str) -> Iterator[tuple[Any, int]]:
    found = 0
    if expected > 0 or path.exists():
        for record in _sized_records(path):
            found += 1
            yield record
    if found != expected:
        raise StagedFileError(
            f"the staged file {path} holds {found} records, but {written_by} staged {expected} in it: it was "
            f"cut short, changed or replaced after it was written. {LIKELY_CAUSE}")


def _records(path: ObjectStoragePath) -> Iterator[Any]:
    return (record for record, _ in _sized_records(path))


def _sized_records(path: ObjectStoragePath) -> Iterator[tuple[Any, int]]:
    with path.open("r") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line), len(line)


def batched_by_size(
    records: Iterable[T], max_items: int, max_bytes: int | Callable[[], int], size_of: Callable[[T], int],
) -> Iterator[list[T]]:
    """Group ``records`` into batches of at most ``max_items`` records and ``max_bytes`` bytes by ``size_of``.

    ``max_bytes`` may be a callable, read as each batch fills, so a budget lowered meanwhile applies to
    the next batch. A record larger than the budget on its own goes in a batch of its own.
    """
    budget = max_bytes if callable(max_bytes) else lambda: max_bytes
    batch: list[T] = []
    size = 0
    for record in records:
        width = size_of(record)
        if batch and (len(batch) >= max_items or size + width > budget()):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += width
    if batch:
        yield batch


def staged_batches(path: ObjectStoragePath, expected: int, written_by: str, max_items: int,
                   max_bytes: int) -> Iterator[list[Any]]:
    """The records of a staged file (see :func:`read_staged`) in batches of at most ``max_items`` records
    and ``max_bytes`` bytes of JSON."""
    sized = read_staged_sized(path, expected, written_by)
    for batch in batched_by_size(sized, max_items, max_bytes, lambda pair: pair[1]):
        yield [record for record, _ in batch]


def remove_folder(folder: ObjectStoragePath) -> None:
    if folder.exists():
        folder.rmdir(recursive=True)
