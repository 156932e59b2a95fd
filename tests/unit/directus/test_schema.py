"""Checking the sync schema against the fields each instance has, and pruning items to it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from directus_sync.config import CollectionSchema
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.schema import CollectionShape, SchemaMismatch, check_schema, prune, schema_problems


def field(name: str, type_: str = "string", pk: bool = False, alias: bool = False,
          special: list[str] | None = None) -> dict[str, Any]:
    return {"field": name, "type": "alias" if alias else type_,
            "schema": None if alias else {"is_primary_key": pk},
            "meta": {"special": ["o2m"]} if alias else {"special": special}}


class FakeInstance:
    """Answers ``fields()`` and ``activity_tracked()`` like Directus would, for one connection id."""

    def __init__(self, conn_id: str, fields: dict[str, list[dict[str, Any]]],
                 untracked: tuple[str, ...] = (), settings_status: int | None = None) -> None:
        self.directus_conn_id = conn_id
        self._fields = fields
        self._untracked = untracked
        self._settings_status = settings_status

    def fields(self, collection: str) -> list[dict[str, Any]]:
        return self._fields[collection]

    def activity_tracked(self, collection: str) -> bool:
        if self._settings_status:
            raise DirectusError(self.directus_conn_id, "GET", f"/collections/{collection}", self._settings_status,
                                "You don't have permission to access collection \"directus_collections\"")
        return collection not in self._untracked


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


def by_name(*fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["field"]: f for f in fields}


@pytest.mark.parametrize("special", [["conceal"], ["encrypt"], ["hash", "conceal"]])
def test_concealed_and_encrypted_fields_are_refused_with_the_field_the_instance_and_why(special: list[str]) -> None:
    fields = by_name(field("id", "integer", pk=True), field("title"), field("secret", special=special))
    problems = schema_problems(CollectionSchema(name="articles", fields=("title", "secret")), "src", fields)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"field articles.secret on 'src' is {special[-1]}: ")
    assert "returns '**********' instead of its value through the API" in problems[0]
    assert "remove it from the schema" in problems[0]


def test_alias_fields_are_still_refused_and_other_specials_pass() -> None:
    fields = by_name(field("id", "integer", pk=True), field("comments", alias=True),
                     field("data", "json", special=["cast-json"]), field("made_by", "uuid", special=["user-created"]))
    schema = CollectionSchema(name="articles", fields=("comments", "data", "made_by"))
    assert schema_problems(schema, "src", fields) == [
        "field articles.comments on 'src' is a relational or presentation field (o2m) that has no column, and no "
        "relation the sync user may read explains it: rerun `directus-sync provision` for this schema (it grants "
        "the collections behind the alias), or list the junction or child collection itself (README, Relations)"]


def test_a_concealed_field_on_the_remote_only_is_refused_too() -> None:
    concealed = [field("id", "integer", pk=True), field("title"), field("body", special=["conceal"])]
    source = FakeInstance("src", {"articles": ARTICLES})
    remote = FakeInstance("dst", {"articles": concealed})
    with pytest.raises(SchemaMismatch, match=r"field articles\.body on 'dst' is conceal: Directus returns"):
        check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]


def test_an_incremental_run_refuses_a_source_collection_without_activity_tracking() -> None:
    source = FakeInstance("src", {"articles": ARTICLES}, untracked=("articles",))
    remote = FakeInstance("dst", {"articles": ARTICLES})
    with pytest.raises(SchemaMismatch) as caught:
        check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "activity tracking is off for articles on the source 'src'" in message
    assert "only full comparisons (full_resync or the reconcile DAG) see them" in message
    assert "set the collection's Activity tracking to 'all' or set reconcile_schedule" in message


def test_only_the_source_s_activity_tracking_matters() -> None:
    source = FakeInstance("src", {"articles": ARTICLES})
    remote = FakeInstance("dst", {"articles": ARTICLES}, untracked=("articles",))
    assert "articles" in check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]


@pytest.mark.parametrize(("full", "reconcile", "said"), [
    (True, False, "this run compares every item, so it syncs the collection"),
    (True, True, "this run compares every item, so it syncs the collection"),
    (False, True, "this run cannot see its changes, the reconcile DAG syncs them"),
])
def test_full_runs_and_remotes_with_a_reconcile_dag_sync_an_untracked_collection_and_say_so(
        full: bool, reconcile: bool, said: str, caplog: pytest.LogCaptureFixture) -> None:
    source = FakeInstance("src", {"articles": ARTICLES}, untracked=("articles",))
    remote = FakeInstance("dst", {"articles": ARTICLES})
    with caplog.at_level(logging.WARNING, logger="directus_sync.directus.schema"):
        shapes = check_schema([SCHEMA], source, remote, full=full, reconcile=reconcile)  # type: ignore[arg-type]
    assert "articles" in shapes
    assert "activity tracking is off for articles on the source 'src'" in caplog.text
    assert said in caplog.text


def test_a_sync_user_that_may_not_read_collection_settings_is_told_to_provision_again() -> None:
    source = FakeInstance("src", {"articles": ARTICLES}, settings_status=403)
    remote = FakeInstance("dst", {"articles": ARTICLES})
    with pytest.raises(SchemaMismatch, match="needs read access to directus_collections: rerun `directus-sync "
                                             "provision`"):
        check_schema([SCHEMA], source, remote)  # type: ignore[arg-type]


def test_listed_many_to_one_fields_are_references_to_their_foreign_keys_table() -> None:
    from directus_sync.config import CollectionSchema
    from directus_sync.directus.schema import references_of

    fields = {"id": {"type": "integer", "schema": {"is_primary_key": True}},
              "title": {"type": "string", "schema": {}},
              "author": {"type": "integer", "schema": {"foreign_key_table": "authors", "foreign_key_column": "id"}},
              "editor": {"type": "uuid", "schema": {"foreign_key_table": "directus_users"}}}
    schema = CollectionSchema(name="articles", fields=("title", "author"))
    assert references_of(schema, fields) == (("author", "authors"),)  # editor is not listed


def test_a_relation_that_differs_between_the_instances_names_both_sides() -> None:
    from directus_sync.config import CollectionSchema
    from directus_sync.directus.schema import reference_problems

    schema = CollectionSchema(name="articles", fields=("author", "title"))
    source = {"author": {"type": "integer", "schema": {"foreign_key_table": "authors"}}, "title": {"schema": {}}}
    other_table = {"author": {"type": "integer", "schema": {"foreign_key_table": "people"}}, "title": {"schema": {}}}
    plain = {"author": {"type": "integer", "schema": {}}, "title": {"schema": {}}}
    uuid_keys = {"author": {"type": "uuid", "schema": {"foreign_key_table": "authors"}}, "title": {"schema": {}}}
    assert reference_problems(schema, ("eu", source), ("us", source)) == []
    assert reference_problems(schema, ("eu", source), ("us", other_table)) == [
        "field articles.author points at 'authors' on 'eu' but at 'people' on 'us': make the relation the same "
        "on both instances"]
    [problem] = reference_problems(schema, ("eu", source), ("us", plain))
    assert "at no collection (not a many-to-one) on 'us'" in problem
    assert reference_problems(schema, ("eu", source), ("us", uuid_keys)) == [
        "field articles.author -> authors holds integer keys on 'eu' but uuid keys on 'us'"]
