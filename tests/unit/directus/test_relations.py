"""Directus's relations as Directus 12.4.0 returns them, and the checks that two instances relate the listed
fields alike.

The fixture is the admin's real ``/relations`` answer (its rows for the collections below, and one of
Directus's own) on an instance with ``articles`` (many-to-one ``author`` -> ``authors``, an ``image`` file,
a self reference ``parent`` with its one-to-many ``children``), many-to-many ``tags`` through
``articles_tags``, ``translations`` through ``articles_translations`` to ``languages`` (string key
``code``), and many-to-any ``blocks`` through ``articles_blocks`` to ``block_text`` and ``block_quote``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from directus_sync.config import CollectionSchema
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.relations import (
    Relation,
    expand_aliases,
    key_type_problems,
    of_listed_fields,
    parse_relations,
    read_relations,
    related_collections,
    relation_problems,
)
from directus_sync.directus.schema import SchemaMismatch

ROWS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "relations_directus_12.4.0.json").read_text())
RELATIONS = parse_relations(ROWS)
ARTICLE_FIELDS = ("title", "author", "parent", "image", "tags", "translations", "children", "blocks")


def relation(collection: str, field: str) -> Relation:
    return next(r for r in RELATIONS if (r.collection, r.field) == (collection, field))


# -- how each kind of relation appears ----------------------------------------------------------------


def test_a_many_to_one_is_one_row_on_the_side_holding_the_key() -> None:
    assert relation("articles", "author") == Relation(
        "articles", "author", "authors", one_field=None, junction_field=None, one_collection_field=None,
        one_allowed_collections=(), sort_field=None)
    [row] = [r for r in ROWS if (r["collection"], r["field"]) == ("articles", "author")]
    assert row["schema"]["on_delete"] == "SET NULL" and not row["meta"].get("system")  # as the Data Studio makes it
    assert relation("articles", "image").related_collection == "directus_files"


def test_a_one_to_many_is_the_one_field_of_the_many_to_one_it_mirrors() -> None:
    parent = relation("articles", "parent")
    assert (parent.related_collection, parent.one_field, parent.junction_field) == ("articles", "children", None)
    assert not any(r.field == "children" for r in RELATIONS)


def test_a_many_to_many_is_two_rows_on_the_junction_each_naming_the_other_as_junction_field() -> None:
    to_articles, to_tags = relation("articles_tags", "articles_id"), relation("articles_tags", "tags_id")
    assert (to_articles.related_collection, to_articles.one_field, to_articles.junction_field) == (
        "articles", "tags", "tags_id")
    assert (to_tags.related_collection, to_tags.one_field, to_tags.junction_field) == ("tags", None, "articles_id")


def test_translations_look_like_a_many_to_many_to_languages() -> None:
    to_articles = relation("articles_translations", "articles_id")
    to_languages = relation("articles_translations", "languages_code")
    assert (to_articles.one_field, to_articles.junction_field) == ("translations", "languages_code")
    assert (to_languages.related_collection, to_languages.junction_field) == ("languages", "articles_id")


def test_a_many_to_any_item_field_has_no_related_collection_and_no_foreign_key() -> None:
    item = relation("articles_blocks", "item")
    [row] = [r for r in ROWS if (r["collection"], r["field"]) == ("articles_blocks", "item")]
    assert item.related_collection is None and row["schema"] is None  # no foreign key in the database
    assert (item.one_collection_field, item.one_allowed_collections, item.junction_field) == (
        "collection", ("block_text", "block_quote"), "articles_id")
    assert item.target() == "any of block_text, block_quote"
    assert item.joins() == ("articles_blocks", "block_text", "block_quote")
    assert relation("articles_blocks", "articles_id").one_field == "blocks"


def test_directus_own_relations_are_marked_system() -> None:
    # Their rows come too; only the relations of listed fields are ever compared (of_listed_fields).
    assert [f"{r['collection']}.{r['field']}" for r in ROWS if (r.get("meta") or {}).get("system")] == [
        "directus_fields.collection"]


def test_a_row_without_meta_is_a_plain_many_to_one_and_a_row_without_field_is_refused() -> None:
    assert parse_relations([{"collection": "a", "field": "b", "related_collection": "c", "meta": None,
                             "schema": None}]) == [Relation("a", "b", "c")]
    with pytest.raises(ValueError, match="without a collection or field"):
        parse_relations([{"collection": "a", "related_collection": "c"}])


# -- reading them ---------------------------------------------------------------------------------------


class FakeHook:
    directus_conn_id = "directus_eu"

    def __init__(self, status: int | None = None) -> None:
        self.status = status

    def relations(self) -> list[dict[str, Any]]:
        if self.status:
            raise DirectusError("directus_eu", "GET", "/relations", self.status, "You don't have permission")
        return ROWS


def test_read_relations_parses_the_hooks_answer() -> None:
    assert read_relations(FakeHook()) == RELATIONS  # type: ignore[arg-type]


def test_a_sync_user_without_read_access_to_directus_relations_is_told_to_rerun_provision() -> None:
    with pytest.raises(SchemaMismatch, match=r"on 'directus_eu' may not read the relations .*403.*needs read access "
                                             r"to directus_relations: rerun `directus-sync provision`"):
        read_relations(FakeHook(403))  # type: ignore[arg-type]
    with pytest.raises(DirectusError):
        read_relations(FakeHook(500))  # type: ignore[arg-type]


# The listed fields of each synced collection: the many-to-one fields and the junctions' keys.
SYNCED = {"articles": ["title", "author", "parent"], "articles_tags": ["articles_id", "tags_id"],
          "articles_translations": ["articles_id", "languages_code", "title"],
          "articles_blocks": ["articles_id", "item", "collection"]}


def replaced(collection: str, field: str, **changes: Any) -> list[Relation]:
    return [Relation(**{**r.__dict__, **changes}) if (r.collection, r.field) == (collection, field) else r
            for r in RELATIONS]


def test_instances_with_the_same_relations_have_no_problems() -> None:
    assert relation_problems(RELATIONS, list(reversed(RELATIONS)), SYNCED, "directus_eu", "directus_us") == []


def test_a_field_pointing_elsewhere_names_both_sides() -> None:
    remote = replaced("articles", "author", related_collection="people")
    assert relation_problems(RELATIONS, remote, SYNCED, "directus_eu", "directus_us") == [
        "articles.author -> authors on 'directus_eu' but -> people on 'directus_us'"]


def test_a_different_junction_field_names_both_sides() -> None:
    remote = replaced("articles_tags", "articles_id", junction_field="tag_id")
    assert relation_problems(RELATIONS, remote, SYNCED, "directus_eu", "directus_us") == [
        "articles_tags.articles_id has junction field tags_id on 'directus_eu' but tag_id on 'directus_us'"]


def test_many_to_any_targets_compare_as_a_set() -> None:
    reordered = replaced("articles_blocks", "item", one_allowed_collections=("block_quote", "block_text"))
    assert relation_problems(RELATIONS, reordered, SYNCED, "directus_eu", "directus_us") == []
    fewer = replaced("articles_blocks", "item", one_allowed_collections=("block_text",))
    assert relation_problems(RELATIONS, fewer, SYNCED, "directus_eu", "directus_us") == [
        "articles_blocks.item -> any of block_text, block_quote on 'directus_eu' but -> any of block_text on "
        "'directus_us'"]


def test_a_relation_missing_on_one_side_says_where_and_that_it_may_be_hidden() -> None:
    remote = [r for r in RELATIONS if r.name != "articles.author"]
    [problem] = relation_problems(RELATIONS, remote, SYNCED, "directus_eu", "directus_us")
    assert problem.startswith("relation articles.author -> authors is on 'directus_eu' but not on 'directus_us'")
    assert "let the sync user of 'directus_us' read every collection and field it joins" in problem
    [problem] = relation_problems(remote, RELATIONS, SYNCED, "directus_eu", "directus_us")
    assert "is on 'directus_us' but not on 'directus_eu'" in problem


def test_only_the_relations_of_listed_fields_are_compared() -> None:
    remote = replaced("directus_fields", "collection", related_collection="elsewhere")
    assert relation_problems(RELATIONS, remote, SYNCED, "directus_eu", "directus_us") == []
    # articles.image is not listed: a difference there does not stop the sync of the listed fields.
    remote = replaced("articles", "image", related_collection="elsewhere")
    assert relation_problems(RELATIONS, remote, {"articles": ["title"]}, "directus_eu", "directus_us") == []


def test_an_alias_counts_through_its_relation() -> None:
    assert [r.name for r in of_listed_fields(RELATIONS, {"articles": ["tags"]})] == ["articles_tags.articles_id"]
    assert [r.name for r in of_listed_fields(RELATIONS, {"articles": ["children"]})] == ["articles.parent"]


def test_the_related_collections_include_junctions_targets_and_many_to_any_collections() -> None:
    listed = of_listed_fields(RELATIONS, {"articles": ["author", "image"], "articles_blocks": ["item"]})
    assert related_collections(listed) == [
        "articles", "directus_files", "authors", "articles_blocks", "block_text", "block_quote"]


def fields(key: str, kind: str) -> dict[str, dict[str, Any]]:
    return {key: {"field": key, "type": kind, "schema": {"is_primary_key": True}},
            "name": {"field": "name", "type": "string", "schema": {"is_primary_key": False}}}


def test_related_keys_must_have_the_same_type_on_both_instances() -> None:
    source = {"authors": fields("id", "integer"), "languages": fields("code", "string")}
    remote = {"authors": fields("id", "uuid"), "languages": fields("code", "string")}
    assert key_type_problems(["authors", "languages", "tags"], source, remote, "directus_eu", "directus_us") == [
        "the key of authors is authors.id (integer) on 'directus_eu' but authors.id (uuid) on 'directus_us': "
        "references to its items cannot be copied; give it the same key on both instances"]


# -- listed aliases -----------------------------------------------------------------------------------------

def column(name: str, kind: str = "integer", pk: bool = False, special: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"field": name, "type": kind, "schema": {"is_primary_key": pk}, "meta": {"special": list(special)}}


def alias(name: str, special: str) -> dict[str, Any]:
    return {"field": name, "type": "alias", "schema": None, "meta": {"special": [special]}}


FIELDS = {
    "articles": {f["field"]: f for f in (column("id", pk=True), column("title", "string"), column("author"),
                                          alias("tags", "m2m"), alias("translations", "translations"),
                                          alias("children", "o2m"), alias("blocks", "m2a"))},
    "articles_tags": {f["field"]: f for f in (column("id", pk=True), column("articles_id"), column("tags_id"))},
    "articles_translations": {f["field"]: f for f in (
        column("id", pk=True), column("articles_id"), column("languages_code", "string"), column("title", "string"),
        column("secret", "string", special=("conceal",)))},
    "articles_blocks": {f["field"]: f for f in (column("id", pk=True), column("articles_id"), column("item", "string"),
                                                column("collection", "string"), column("sort"))},
}


def test_a_listed_alias_is_replaced_by_the_collection_behind_it_with_its_columns() -> None:
    schema = [CollectionSchema(name="articles", fields=("title", "author", "tags", "translations", "children",
                                                       "blocks"))]
    expanded = expand_aliases(schema, RELATIONS, FIELDS.__getitem__)
    assert [(s.name, s.fields) for s in expanded] == [
        # children is the one-to-many of articles.parent: its rows are articles, which must carry parent.
        ("articles", ("title", "author", "parent")),
        ("articles_tags", ("articles_id", "tags_id")),
        ("articles_translations", ("articles_id", "languages_code", "title")),  # never a concealed field
        ("articles_blocks", ("articles_id", "item", "collection", "sort")),
    ]


def test_a_collection_listed_already_keeps_its_fields_and_a_schema_without_aliases_is_unchanged() -> None:
    schema = [CollectionSchema(name="articles", fields=("tags",)),
              CollectionSchema(name="articles_tags", fields=("articles_id", "tags_id"))]
    expanded = expand_aliases(schema, RELATIONS, FIELDS.__getitem__)
    assert [(s.name, s.fields) for s in expanded] == [("articles", ()), ("articles_tags", ("articles_id", "tags_id"))]
    plain = (CollectionSchema(name="articles", fields=("title",)),)
    assert expand_aliases(plain, RELATIONS, FIELDS.__getitem__) == plain


def test_an_alias_no_visible_relation_explains_stays_listed_for_the_schema_check_to_refuse() -> None:
    schema = [CollectionSchema(name="articles", fields=("title", "tags"))]
    hidden = [r for r in RELATIONS if r.collection != "articles_tags"]
    assert [(s.name, s.fields) for s in expand_aliases(schema, hidden, FIELDS.__getitem__)] == [
        ("articles", ("title", "tags"))]


def test_a_child_listed_already_gains_the_foreign_key_of_the_relation() -> None:
    comments = {"comments": {f["field"]: f for f in (column("id", pk=True), column("body", "string"),
                                                      column("article"))}}
    rows = [{"collection": "comments", "field": "article", "related_collection": "articles",
             "meta": {"one_field": "comments"}}]
    fields = {**FIELDS, "articles": {**FIELDS["articles"], "comments": alias("comments", "o2m")}, **comments}
    schema = [CollectionSchema(name="articles", fields=("title", "comments")),
              CollectionSchema(name="comments", fields=("body",))]
    expanded = expand_aliases(schema, parse_relations(rows), fields.__getitem__)
    assert [(s.name, s.fields) for s in expanded] == [("articles", ("title",)), ("comments", ("body", "article"))]


def test_a_child_brings_its_content_not_the_fields_directus_fills_in_or_its_references_to_directus() -> None:
    child = {f["field"]: f for f in (
        column("id", pk=True), column("body", "string"), column("article"),
        column("user_created", "uuid", special=("user-created",)),
        column("date_updated", "timestamp", special=("date-updated",)),
        {"field": "attachment", "type": "uuid", "schema": {"foreign_key_table": "directus_files"}, "meta": {}})}
    rows = [{"collection": "comments", "field": "article", "related_collection": "articles",
             "meta": {"one_field": "comments"}}]
    fields = {"articles": {**FIELDS["articles"], "comments": alias("comments", "o2m")}, "comments": child}
    schema = [CollectionSchema(name="articles", fields=("title", "comments"))]
    expanded = expand_aliases(schema, parse_relations(rows), fields.__getitem__)
    assert [(s.name, s.fields) for s in expanded] == [("articles", ("title",)), ("comments", ("body", "article"))]


def test_a_system_collection_behind_an_alias_is_a_schema_problem_naming_it() -> None:
    rows = [{"collection": "directus_users", "field": "team", "related_collection": "teams",
             "meta": {"one_field": "members"}}]
    fields = {"teams": {f["field"]: f for f in (column("id", pk=True), column("name", "string"),
                                                 alias("members", "o2m"))},
              "directus_users": {"id": column("id", "uuid", pk=True), "team": column("team")}}
    with pytest.raises(SchemaMismatch, match="'directus_users' behind a listed alias cannot be synced"):
        expand_aliases([CollectionSchema(name="teams", fields=("name", "members"))], parse_relations(rows),
                       fields.__getitem__)
