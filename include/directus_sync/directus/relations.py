"""Directus's relations: which fields reference which collections, and whether two instances relate the
synced fields alike (``directus-sync check``; a run compares the listed many-to-one fields' foreign keys,
see :func:`~directus_sync.directus.schema.reference_problems`, which needs no extra permission).

Directus keeps one row per foreign-key field in ``/relations``, always on the *many* side (the collection
holding the key). Verified against Directus 12.4.0 (SQLite; the rows are in
``tests/unit/directus/relations_directus_12.4.0.json``), each kind appears so:

- **many-to-one** ``articles.author -> authors``: ``{"collection": "articles", "field": "author",
  "related_collection": "authors", "meta": {"one_field": null, "junction_field": null, ...}, "schema":
  {"foreign_key_table": "authors", "foreign_key_column": "id", "on_delete": "SET NULL", ...}}``. The field
  itself (``/fields``) has a column of the key's type and ``meta.special`` ``["m2o"]``. A file or image
  field is the same with ``related_collection`` ``directus_files`` (a uuid, special ``["file"]``).
- **one-to-many** has no row of its own: it is the ``meta.one_field`` of the many-to-one row it mirrors.
  ``articles.parent -> articles`` with ``one_field`` ``"children"`` is both the self reference ``parent``
  and the alias ``children`` (``type`` ``alias``, special ``["o2m"]``, no column).
- **many-to-many** ``articles.tags``: two rows on the junction ``articles_tags``, each naming the other
  as its ``junction_field``: ``articles_id -> articles`` with ``one_field`` ``"tags"`` and
  ``junction_field`` ``"tags_id"``, and ``tags_id -> tags`` with ``one_field`` null and ``junction_field``
  ``"articles_id"``. The alias ``tags`` on articles has special ``["m2m"]``.
- **translations** look exactly like many-to-many (``articles_translations.articles_id -> articles`` with
  ``one_field`` ``"translations"``, ``languages_code -> languages`` whose key is the string ``code``:
  ``foreign_key_column`` ``"code"``); only the alias's special ``["translations"]`` tells them apart.
- **many-to-any** ``articles.blocks``: ``articles_blocks.articles_id -> articles`` (``one_field``
  ``"blocks"``, ``junction_field`` ``"item"``) and ``articles_blocks.item`` with ``related_collection``
  null, ``schema`` null (no foreign key: the database accepts any value), ``meta.one_collection_field``
  ``"collection"`` and ``meta.one_allowed_collections`` ``["block_text", "block_quote"]``.
- Directus's own relations (``directus_fields.collection -> directus_collections``...) come too, with
  ``meta.system`` true and no ``meta.id``. Rows are not in id order.

Who sees what: ``GET /relations`` needs a read permission on ``directus_relations`` (otherwise 403 "You
don't have permission to perform "read" for collection "directus_relations""). Directus then reads the
rows as the system, so that permission's filters and field limits change nothing, and it shows only the
relations whose collections (the many side, the related one, every many-to-any target) the user may read,
with the key field and the ``one_field`` among its readable fields. A sync user provisioned for
``articles`` alone saw ``articles.parent`` but not ``articles.author``, and one provisioned for all the
collections above did not see ``articles.image`` (no access to ``directus_files``): a relation missing on
one instance may be one its sync user may not see. The answer is never paged (Directus reads without a
limit; with ``QUERY_LIMIT_MAX=2`` all 71 rows still came in one answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directus_sync.config import CollectionSchema
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.schema import MASKED_SPECIALS, SchemaMismatch, describe_fields, key_field

RELATIONS_FIX = "it needs read access to directus_relations: rerun `directus-sync provision`"

Fields = Mapping[str, Mapping[str, Mapping[str, Any]]]  # per collection, describe_fields' answer


@dataclass(frozen=True)
class Relation:
    """One row of Directus's /relations: the many side holds the foreign key."""

    collection: str  # the many side ("articles"; for a many-to-many the junction "articles_tags")
    field: str  # the foreign-key field ("author"; "tags_id")
    related_collection: str | None  # the one side ("authors"); None for a many-to-any item field
    one_field: str | None = None  # the alias field on the one side, if any ("tags" on articles)
    junction_field: str | None = None  # the other foreign key of a junction row
    one_collection_field: str | None = None  # many-to-any: the field holding the related collection's name
    one_allowed_collections: tuple[str, ...] = ()  # many-to-any: the collections it may point to
    sort_field: str | None = None  # the field Directus keeps the manual order of the one side's list in

    @property
    def name(self) -> str:
        return f"{self.collection}.{self.field}"

    def target(self) -> str:
        """Where the field points, as messages say it."""
        if self.related_collection is not None:
            return self.related_collection
        return "any of " + (", ".join(self.one_allowed_collections) or "no collection")

    def joins(self) -> tuple[str, ...]:
        """The collections this relation joins: the many side, then the one side(s)."""
        related = (self.related_collection,) if self.related_collection else self.one_allowed_collections
        return (self.collection, *related)


def parse_relations(rows: Iterable[Mapping[str, Any]]) -> list[Relation]:
    """The relations in ``/relations`` rows, in the order given.

    A row without ``meta`` (a foreign key Directus keeps no metadata for) is a plain many-to-one.
    """
    return [_relation(row) for row in rows]


def _relation(row: Mapping[str, Any]) -> Relation:
    collection, field = row.get("collection"), row.get("field")
    if not isinstance(collection, str) or not isinstance(field, str):
        raise ValueError(f"a /relations row without a collection or field, which Directus always sends: {row!r}")
    meta: Mapping[str, Any] = row.get("meta") or {}
    return Relation(
        collection=collection, field=field, related_collection=row.get("related_collection"),
        one_field=meta.get("one_field"), junction_field=meta.get("junction_field"),
        one_collection_field=meta.get("one_collection_field"),
        one_allowed_collections=tuple(meta.get("one_allowed_collections") or ()),
        sort_field=meta.get("sort_field"))


def read_relations(hook: DirectusHook) -> list[Relation]:
    """The relations ``hook``'s sync user may see; a refused read is a schema problem saying what to grant."""
    try:
        return parse_relations(hook.relations())
    except DirectusError as exc:
        if exc.status == 403:
            raise SchemaMismatch(f"the sync user on {hook.directus_conn_id!r} may not read the relations "
                                 f"(Directus answered 403); {RELATIONS_FIX}") from exc
        raise


FILES = "directus_files"
# Directus's own fields holding a file (@directus/system-data's relations): pruning must read them all.
SYSTEM_FILE_FIELDS = (("directus_users", "avatar"), ("directus_settings", "project_logo"),
                      ("directus_settings", "public_foreground"), ("directus_settings", "public_background"),
                      ("directus_settings", "public_favicon"))


@dataclass(frozen=True)
class FileHolder:
    """A field that may hold a file id: a file field, or a many-to-any field whose ``kind_field`` may say
    ``directus_files``."""

    collection: str
    field: str
    kind_field: str | None = None


def file_holders(relations: Iterable[Relation]) -> list[FileHolder]:
    """Every field the ``relations`` say may hold a file id."""
    holders = {FileHolder(r.collection, r.field) for r in relations if r.related_collection == FILES}
    holders |= {FileHolder(r.collection, r.field, r.one_collection_field) for r in relations
                if r.related_collection is None and FILES in r.one_allowed_collections}
    return sorted(holders, key=lambda h: (h.collection, h.field))


def unseen_system_holders(holders: Iterable[FileHolder]) -> list[str]:
    """Directus's own file fields missing from ``holders``: ones the sync user may not read."""
    seen = {(h.collection, h.field) for h in holders}
    return [f"{c}.{f}" for c, f in SYSTEM_FILE_FIELDS if (c, f) not in seen]


def of_listed_fields(relations: Sequence[Relation], fields: Mapping[str, Iterable[str]]) -> list[Relation]:
    """The relations of the listed fields (``fields``: per synced collection): those whose foreign-key field is
    listed, or whose alias (``one_field``) is."""
    listed = {(collection, name) for collection, names in fields.items() for name in names}
    return [r for r in relations if (r.collection, r.field) in listed or (r.related_collection, r.one_field) in listed]


def relation_problems(
    source: Sequence[Relation], remote: Sequence[Relation], fields: Mapping[str, Iterable[str]], source_conn_id: str,
    remote_conn_id: str,
) -> list[str]:
    """How the relations of the listed fields differ between the source and the remote.

    ``fields`` maps each synced collection to its listed fields. A relation counts when its foreign-key
    field is listed, or its alias (``one_field``) is. Both instances must point each such field to the
    same collection, pair junction fields alike and let a many-to-any field reach the same collections, or
    items copied as they are would point elsewhere on the remote. Each message names both instances; they
    come sorted by field.
    """
    on_source = {(r.collection, r.field): r for r in of_listed_fields(source, fields)}
    on_remote = {(r.collection, r.field): r for r in of_listed_fields(remote, fields)}
    problems: list[str] = []
    for key in sorted(on_source.keys() | on_remote.keys()):
        mine, theirs = on_source.get(key), on_remote.get(key)
        if mine is None or theirs is None:
            present = mine or theirs
            assert present is not None
            held, missing = (source_conn_id, remote_conn_id) if mine else (remote_conn_id, source_conn_id)
            problems.append(_missing(present, held, missing))
        else:
            problems += _differences(mine, theirs, source_conn_id, remote_conn_id)
    return problems


def _missing(relation: Relation, held: str, missing: str) -> str:
    return (f"relation {relation.name} -> {relation.target()} is on {held!r} but not on {missing!r}: create it "
            f"there, or let the sync user of {missing!r} read every collection and field it joins (Directus "
            "hides the relations a user may not read)")


def _differences(source: Relation, remote: Relation, source_conn_id: str, remote_conn_id: str) -> list[str]:
    sides = f"on {source_conn_id!r} but"
    problems = []
    if (source.related_collection, set(source.one_allowed_collections)) != (
            remote.related_collection, set(remote.one_allowed_collections)):
        problems.append(f"{source.name} -> {source.target()} {sides} -> {remote.target()} on {remote_conn_id!r}")
    if source.junction_field != remote.junction_field:
        problems.append(f"{source.name} has junction field {source.junction_field or 'none'} {sides} "
                        f"{remote.junction_field or 'none'} on {remote_conn_id!r}")
    if source.one_collection_field != remote.one_collection_field:
        problems.append(f"{source.name} names its item's collection in {source.one_collection_field or 'no field'} "
                        f"{sides} in {remote.one_collection_field or 'no field'} on {remote_conn_id!r}")
    return problems


def related_collections(relations: Sequence[Relation]) -> list[str]:
    """Every collection ``relations`` join (junctions, related and many-to-any targets included), each once,
    in the order met: those whose keys :func:`key_type_problems` compares."""
    return list(dict.fromkeys(name for r in relations for name in r.joins()))


def key_type_problems(
    collections: Iterable[str], source_fields: Fields, remote_fields: Fields, source_conn_id: str,
    remote_conn_id: str,
) -> list[str]:
    """Collections whose primary key differs in name or type between the instances (``*_fields``: per
    collection, :func:`~directus_sync.directus.schema.describe_fields`' answer).

    A reference holds the related item's key as it is: an integer key on one side and a uuid on the other
    cannot point to the same item. A collection missing on either side is left to the checks that say so.
    """
    problems = []
    for collection in collections:
        if collection not in source_fields or collection not in remote_fields:
            continue
        mine, theirs = _key(source_fields[collection]), _key(remote_fields[collection])
        if mine != theirs:
            problems.append(f"the key of {collection} is {_key_text(collection, mine)} on {source_conn_id!r} but "
                            f"{_key_text(collection, theirs)} on {remote_conn_id!r}: references to its items "
                            "cannot be copied; give it the same key on both instances")
    return problems


def _key(fields: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    name = key_field(fields)
    return None if name is None else (name, str(fields[name].get("type")))


def _key_text(collection: str, key: tuple[str, str] | None) -> str:
    return "missing" if key is None else f"{collection}.{key[0]} ({key[1]})"


def expand_aliases(
    schemas: Sequence[CollectionSchema], relations: Sequence[Relation],
    fields_of: Callable[[str], Mapping[str, Mapping[str, Any]]],
) -> tuple[CollectionSchema, ...]:
    """The schema with each listed alias field (one-to-many, many-to-many, translations, many-to-any) replaced
    by the collection behind it, synced as a collection of its own.

    The alias has no column: its links are the rows of the junction (or the child collection of a
    one-to-many), which hold the foreign keys. That collection joins the schema with its content fields
    (see :func:`_columns`); a collection the schema lists itself keeps its listed fields plus the foreign
    key (and sort field) of the relation, without which the links could not travel (``pages.children``
    adds ``parent`` to ``pages``). An alias no visible relation explains is left listed, for the schema
    check to refuse with its advice. ``fields_of`` answers ``/fields`` of a collection by name.
    """
    relation_of = {name: (schema.name, _relation_behind(relations, schema.name, name))
                   for schema in schemas if _lists_alias(schema, fields_of) for name in schema.fields
                   if (fields_of(schema.name).get(name) or {}).get("type") == "alias"}
    behind = {(parent, alias): r for alias, (parent, r) in relation_of.items() if r is not None}
    needed: dict[str, list[str]] = {}  # child -> the link fields it must carry
    for relation in behind.values():
        needed.setdefault(relation.collection, []).extend(
            f for f in (relation.field, relation.sort_field) if f)
    result: dict[str, tuple[str, ...]] = {}
    for schema in schemas:
        kept = [name for name in schema.fields if (schema.name, name) not in behind]
        result[schema.name] = tuple(dict.fromkeys([*kept, *needed.get(schema.name, [])]))
    for child in dict.fromkeys(r.collection for r in behind.values()):
        if child not in result:
            result[child] = tuple(dict.fromkeys([*_columns(fields_of(child)), *needed[child]]))
    return tuple(_schema(name, fields) for name, fields in result.items())


def _schema(name: str, fields: tuple[str, ...]) -> CollectionSchema:
    """A collection of the expanded schema, validated as a listed one would be (no system collection, names
    Directus accepts); a parent left with no column keeps syncing its keys, which the links point at."""
    try:
        if fields:
            return CollectionSchema.model_validate({"name": name, "fields": fields})
        CollectionSchema.model_validate({"name": name, "fields": ("placeholder",)})  # the name's checks
        return CollectionSchema.model_construct(name=name, fields=())
    except ValueError as exc:
        raise SchemaMismatch(f"the collection {name!r} behind a listed alias cannot be synced: {exc}") from exc


def effective_schema(hook: DirectusHook, schemas: Sequence[CollectionSchema]) -> tuple[CollectionSchema, ...]:
    """What a run syncs from ``hook``'s instance (the source): the schema with its aliases expanded (see
    :func:`expand_aliases`). ``/relations`` is read only when an alias is listed, so a schema without one
    needs no read access to it."""
    return with_aliases_expanded(schemas, lambda collection: describe_fields(hook, collection),
                                 lambda: read_relations(hook))


def with_aliases_expanded(
    schemas: Sequence[CollectionSchema], fields_of: Callable[[str], Mapping[str, Mapping[str, Any]]],
    relations_of: Callable[[], Sequence[Relation]],
) -> tuple[CollectionSchema, ...]:
    """:func:`expand_aliases` for the sync user (runs, ``check``) and the admin (``provision``) alike: each
    collection's fields are read once, and the relations only when an alias is listed."""
    known: dict[str, Mapping[str, Mapping[str, Any]]] = {}

    def cached(collection: str) -> Mapping[str, Mapping[str, Any]]:
        if collection not in known:
            known[collection] = fields_of(collection)
        return known[collection]

    if not any(_lists_alias(schema, cached) for schema in schemas):
        return tuple(schemas)
    return expand_aliases(schemas, relations_of(), cached)


def _lists_alias(schema: CollectionSchema, fields_of: Callable[[str], Mapping[str, Mapping[str, Any]]]) -> bool:
    fields = fields_of(schema.name)
    return any((fields.get(name) or {}).get("type") == "alias" for name in schema.fields)


def _relation_behind(relations: Sequence[Relation], collection: str, alias: str) -> Relation | None:
    """The relation holding the rows behind ``collection.alias``: the many side whose ``one_field`` it is."""
    return next((r for r in relations if r.related_collection == collection and r.one_field == alias), None)


def _columns(fields: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The content fields of a collection behind an alias: those with a column, but not its key, not concealed
    or encrypted values, not the fields Directus fills in itself (``user_created``, ``date_updated``...), and
    not references to Directus's own collections (a user's or a file's id differs between instances)."""
    def content(field: Mapping[str, Any]) -> bool:
        schema = field.get("schema") or {}
        specials = set((field.get("meta") or {}).get("special") or ())
        return (field.get("type") != "alias" and bool(field.get("schema")) and not schema.get("is_primary_key")
                and not set(MASKED_SPECIALS) & specials
                and not any(s.startswith(("user-", "date-", "role-")) for s in specials)
                and not str(schema.get("foreign_key_table") or "").startswith("directus_"))

    return tuple(name for name, field in fields.items() if content(field))
