"""Checking the sync schema against the fields each instance has, and pruning items to it."""

from __future__ import annotations

from typing import Any

import pytest

from directus_sync.config import CollectionSchema
from directus_sync.schema import CollectionShape, SchemaMismatch, check_schema, prune


def field(name: str, type_: str = "string", pk: bool = False, alias: bool = False) -> dict[str, Any]:
    return {"field": name, "type": "alias" if alias else type_,
            "schema": None if alias else {"is_primary_key": pk},
            "meta": {"special": ["o2m"]} if alias else {}}


class FakeInstance:
    """Answers ``fields()`` like Directus would, for one connection id."""

    def __init__(self, conn_id: str, fields: dict[str, list[dict[str, Any]]]) -> None:
        self.directus_conn_id = conn_id
        self._fields = fields

    def fields(self, collection: str) -> list[dict[str, Any]]:
        return self._fields[collection]


ARTICLES = [field("id", "integer", pk=True), field("title"), field("body"), field("comments", alias=True)]
SCHEMA = CollectionSchema(name="articles", fields=("title", "body"))


def test_a_schema_that_both_sides_hold_gives_the_primary_key() -> None:
    source = FakeInstance("src", {"articles": ARTICLES})
    remote = FakeInstance("dst", {"articles": ARTICLES})
    shapes = check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]
    assert shapes["articles"] == CollectionShape("articles", "id", "integer", ("title", "body"))


def test_every_missing_or_unsyncable_field_is_named_with_its_instance() -> None:
    source = FakeInstance("src", {"articles": ARTICLES})
    remote = FakeInstance("dst", {"articles": [field("id", "integer", pk=True), field("title")]})
    schema = CollectionSchema(name="articles", fields=("title", "body", "comments"))
    with pytest.raises(SchemaMismatch) as caught:
        check_schema([schema], source, remote)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "field articles.body is missing on 'dst'" in message
    assert "field articles.comments is missing on 'dst'" in message
    assert "field articles.comments on 'src' is a relational or presentation field (o2m)" in message


def test_primary_keys_must_match() -> None:
    source = FakeInstance("src", {"articles": ARTICLES})
    remote = FakeInstance("dst", {"articles": [field("uuid", pk=True), field("title"), field("body")]})
    with pytest.raises(SchemaMismatch, match="primary key 'uuid' on 'dst' but 'id' on the source"):
        check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]


def test_pruning_keeps_the_key_and_the_listed_fields_only() -> None:
    shape = CollectionShape("articles", "id", "integer", ("title",))
    assert prune({"id": 1, "title": "t", "secret": "s", "user_created": "u"}, shape) == {"id": 1, "title": "t"}


def test_integer_keys_from_the_activity_log_are_typed_back() -> None:
    assert CollectionShape("a", "id", "integer", ()).typed_key("42") == 42
    assert CollectionShape("a", "id", "uuid", ()).typed_key("42") == "42"
