"""What the event-mode tests share: a remote's row."""

from __future__ import annotations

from typing import Any

from directus_sync.config import RemoteSource


def remote(**row: Any) -> RemoteSource:
    """The row of a remote ``eu_to_us`` syncing two collections, with ``row``'s fields on top."""
    return RemoteSource.model_validate({
        "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
        "schema": [{"name": "articles", "fields": ["title"]}, {"name": "authors", "fields": ["name"]}], **row})
