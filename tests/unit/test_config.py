"""Rows of the remote-sources table become validated configs, or broken ones that say what is wrong."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from directus_sync.config import (
    BATCH_BYTES_ENV,
    DEFAULT_BATCH_BYTES,
    BrokenRemote,
    RemoteSource,
    Status,
    batch_bytes,
    dag_id_for,
    parse_row,
)

ROW = {
    "name": "eu_to_us",
    "status": "published",
    "source_conn_id": "directus_eu",
    "remote_conn_id": "directus_us",
    "schema": json.dumps([{"name": "articles", "fields": ["title", "body"]}]),
    "notify_users": json.dumps(["5f0c"]),
}


def test_a_row_in_the_original_extension_shape_is_accepted() -> None:
    remote = parse_row(ROW)
    assert isinstance(remote, RemoteSource)
    assert remote.status is Status.PUBLISHED
    assert remote.collections == ["articles"]
    assert remote.sync_schema[0].fields == ("title", "body")
    assert remote.notify_users == ("5f0c",)
    assert remote.dag_id == "directus_sync__eu_to_us"


def test_the_extension_validators_collection_key_is_accepted_too() -> None:
    remote = parse_row({**ROW, "schema": [{"collection": "articles", "fields": ["title"]}]})
    assert isinstance(remote, RemoteSource)
    assert remote.collections == ["articles"]


def test_nullable_columns_fall_back_to_defaults() -> None:
    remote = parse_row({**ROW, "schedule": None, "batch_size": None, "overlap_seconds": None, "retries": None})
    assert isinstance(remote, RemoteSource)
    assert remote.schedule == "*/5 * * * *"
    assert remote.batch_size == 1000
    assert remote.overlap_seconds == 60


def test_presets_are_schedules() -> None:
    remote = parse_row({**ROW, "schedule": "@hourly"})
    assert isinstance(remote, RemoteSource)
    assert remote.cron == "0 * * * *"


def test_an_invalid_row_names_the_row_and_each_wrong_field() -> None:
    broken = parse_row({**ROW, "schema": '[{"name": "articles"}]', "schedule": "sometimes"})
    assert isinstance(broken, BrokenRemote)
    assert broken.dag_id == "directus_sync__eu_to_us"
    assert "remote-sources row 'eu_to_us' is invalid" in broken.error
    assert "schema[0].fields: Field required" in broken.error
    assert "schedule: Value error, 'sometimes' is not a cron expression" in broken.error
    assert broken.schedule == "*/5 * * * *"
    assert broken.source_conn_id == "directus_eu"


def test_schema_json_that_does_not_parse_is_reported_with_its_position() -> None:
    broken = parse_row({**ROW, "schema": '[{"name": "articles",}]'})
    assert isinstance(broken, BrokenRemote)
    assert "schema: Value error, not valid JSON" in broken.error
    assert "line 1 column" in broken.error


def test_system_collections_wildcards_and_duplicates_are_refused() -> None:
    for schema, message in [
        ([{"name": "directus_users", "fields": ["email"]}], "system collection 'directus_users'"),
        ([{"name": "a", "fields": ["*"]}], '"*" is not accepted'),
        ([{"name": "a", "fields": ["x", "x"]}], "fields listed twice: x"),
        ([{"name": "a", "fields": ["x"]}, {"name": "a", "fields": ["y"]}], "collections twice: a"),
    ]:
        broken = parse_row({**ROW, "schema": schema})
        assert isinstance(broken, BrokenRemote), schema
        assert message in broken.error


@pytest.mark.parametrize("schema", [
    [{"name": "../users", "fields": ["email"]}],
    [{"name": "articles/1", "fields": ["title"]}],
    [{"name": "articles?fields=*", "fields": ["title"]}],
    [{"name": "articles", "fields": ["title", "../../users"]}],
    [{"name": "articles", "fields": ["title,password"]}],
    [{"name": "a" * 65, "fields": ["title"]}],
    [{"name": "articles", "fields": [" title"]}],
], ids=str)
def test_names_that_are_no_directus_identifier_are_refused(schema: list[dict[str, Any]]) -> None:
    broken = parse_row({**ROW, "schema": schema})
    assert isinstance(broken, BrokenRemote)
    assert "is not a Directus identifier" in broken.error


def test_directus_identifiers_pass() -> None:
    schema = [{"name": "blog-posts_2024", "fields": ["Title", "_sort", "body-text"]}]
    assert not isinstance(parse_row({**ROW, "schema": schema}), BrokenRemote)


def test_a_bad_name_still_gets_a_safe_dag_id() -> None:
    broken = parse_row({**ROW, "name": "EU to US!"})
    assert isinstance(broken, BrokenRemote)
    assert broken.dag_id == dag_id_for("EU to US!") == "directus_sync__EU_to_US_"
    assert "name: String should match pattern" in broken.error


def test_a_deadline_reads_as_a_duration_and_empty_means_none() -> None:
    for text, expected in [("15 minutes", timedelta(minutes=15)), ("1 hour", timedelta(hours=1)),
                           ("90s", timedelta(seconds=90)), ("PT20M", timedelta(minutes=20))]:
        remote = parse_row({**ROW, "deadline": text})
        assert isinstance(remote, RemoteSource) and remote.deadline == expected, text
    assert parse_row({**ROW, "deadline": ""}).deadline is None  # type: ignore[union-attr]
    broken = parse_row({**ROW, "deadline": "soon"})
    assert isinstance(broken, BrokenRemote) and "deadline:" in broken.error


def test_alert_channels_are_validated_and_survive_a_broken_row() -> None:
    channels = '[{"type": "http", "conn_id": "ops_webhook", "endpoint": "/hook"}]'
    remote = parse_row({**ROW, "alerts": channels})
    assert isinstance(remote, RemoteSource) and remote.alerts[0].endpoint == "/hook"
    broken = parse_row({**ROW, "alerts": '[{"type": "pager"}]'})
    assert isinstance(broken, BrokenRemote) and "alerts[0].type" in broken.error
    still_alerting = parse_row({**ROW, "schema": "[]", "alerts": channels})
    assert isinstance(still_alerting, BrokenRemote) and still_alerting.alerts[0].conn_id == "ops_webhook"


@pytest.mark.parametrize(("value", "expected"), [("", DEFAULT_BATCH_BYTES), ("16777216", 16 * 1024**2),
                                                 ("4MiB", 4 * 1024**2), ("2 mb", 2_000_000), ("512kib", 512 * 1024)])
def test_the_batch_byte_budget_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                                             expected: int) -> None:
    monkeypatch.setenv(BATCH_BYTES_ENV, value)
    assert batch_bytes() == expected


@pytest.mark.parametrize("value", ["lots", "16 parsecs", "-5", "100"])
def test_a_batch_byte_budget_that_is_no_size_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                      value: str) -> None:
    monkeypatch.setenv(BATCH_BYTES_ENV, value)
    with pytest.raises(ValueError, match=BATCH_BYTES_ENV):
        batch_bytes()
