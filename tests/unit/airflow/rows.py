"""What the Airflow wiring's tests share: a remote's row, a task instance that keeps its XComs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from directus_sync.airflow.failures import RETURN_XCOM_KEY
from directus_sync.config import RemoteSource
from directus_sync.engine.extract import ChangeManifest
from directus_sync.engine.results import Extracted, WindowRecord, parse


def remote(**row: Any) -> RemoteSource:
    """The row of a remote ``eu_to_us`` syncing two collections, with ``row``'s fields on top."""
    return RemoteSource.model_validate({
        "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
        "schema": [{"name": "articles", "fields": ["title"]}, {"name": "authors", "fields": ["name"]}], **row})


def remote_source(**row: Any) -> RemoteSource:
    return RemoteSource.model_validate({
        "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
        "schema": [{"name": "articles", "fields": ["title"]}], **row})


class FakeTI:
    def __init__(self, task_id: str = "apply_creates") -> None:
        self.task_id = task_id
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def delivered(self) -> Any:
        """The task's result as record_run and notify_on_failure get it: its return value, validated."""
        return parse(self.xcom.get(RETURN_XCOM_KEY))


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 28, hour, minute, second, tzinfo=UTC)


# A step's result whose staged files are gone: only what travels in XCom may be read.
GONE = "s3://nowhere@bucket/never-written"
EXTRACTED = Extracted(
    manifest=ChangeManifest(run_folder=GONE, window="w", full=False, collections=[]),
    window=WindowRecord(start=at(9, 59), end=at(11), cursor={"activity_id": 42}))
