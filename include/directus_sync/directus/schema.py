"""The sync schema against real instances: which fields exist, the primary key, and pruning.

Only the listed fields and the primary key ever reach a remote, whatever the source returns. Fields the
API cannot carry (aliases, concealed and encrypted values) are refused, and so are incremental runs of
collections whose changes leave no activity to read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from directus_sync.config import CollectionSchema
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook

log = logging.getLogger(__name__)

INTEGER_TYPES = {"integer", "bigInteger"}
# Specials whose values Directus reads back as "**********" through the API (services/payload.js).
MASKED_SPECIALS = ("conceal", "encrypt")
UNTRACKED_FIX = "set the collection's Activity tracking to 'all' or set reconcile_schedule"


class SchemaMismatch(ValueError):
    """Listed fields are missing or cannot be synced; the message names each field and instance."""


@dataclass(frozen=True)
class CollectionShape:
    """A collection as one instance has it: its primary key and the listed fields it holds."""

    collection: str
    pk: str
    pk_type: str
    fields: tuple[str, ...]
    # The listed many-to-one fields and the collection each points at (its foreign key's table).
    references: tuple[tuple[str, str], ...] = ()

    @property
    def read_fields(self) -> list[str]:
        return [self.pk, *(f for f in self.fields if f != self.pk)]

    @property
    def keyset(self) -> bool:
        """Whether reads can page on the key with ``_gt`` (Directus allows it on numeric keys only)."""
        return self.pk_type in INTEGER_TYPES

    def canonical_key(self, key: Any) -> str:
        """One text form per key, wherever the key comes from (activity, reads, dead letters).

        Activity logs a key as it was sent, while reads return the stored form: Directus accepts an
        upper-case UUID and hands it back lower-case, and logs integer keys as text.
        """
        if self.pk_type in INTEGER_TYPES:
            return str(int(key))
        return str(key).lower() if self.pk_type == "uuid" else str(key)

    def key_forms(self, key: str) -> list[str]:
        """The forms a canonical key may have in another instance's activity log."""
        return [key, key.upper()] if self.pk_type == "uuid" and key != key.upper() else [key]

    def typed_key(self, key: Any) -> Any:
        """A canonical key as writes want it: integer keys as integers."""
        return int(key) if self.pk_type in INTEGER_TYPES else self.canonical_key(key)


def describe_fields(hook: DirectusHook, collection: str) -> dict[str, dict[str, Any]]:
    """The collection's fields by name; a missing or unreadable collection is a schema problem."""
    try:
        return {f["field"]: f for f in hook.fields(collection)}
    except DirectusError as exc:
        if exc.status in (403, 404):
            raise SchemaMismatch(
                f"collection {collection!r} does not exist on {hook.directus_conn_id!r} or its sync user "
                f"may not read it (Directus answered {exc.status})") from exc
        raise


def shape_of(hook: DirectusHook, schema: CollectionSchema) -> CollectionShape:
    """The listed fields of ``schema`` that exist on ``hook``'s instance, and its primary key."""
    fields = describe_fields(hook, schema.name)
    pk = primary_key(fields, schema.name, hook.directus_conn_id)
    return CollectionShape(schema.name, pk, fields[pk].get("type", ""),
                           tuple(f for f in schema.fields if f in fields))


def key_field(fields: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The name of the primary key among a collection's fields (``/fields``, by name), if it has one."""
    return next((name for name, field in fields.items() if (field.get("schema") or {}).get("is_primary_key")), None)


def primary_key(fields: dict[str, dict[str, Any]], collection: str, conn_id: str) -> str:
    if (name := key_field(fields)) is not None:
        return name
    raise SchemaMismatch(f"collection {collection!r} on {conn_id!r} has no primary key")


def schema_problems(
    schema: CollectionSchema, conn_id: str, fields: dict[str, dict[str, Any]], other_pk: str | None = None
) -> list[str]:
    """What stops ``schema`` from syncing with the instance ``conn_id`` whose fields are ``fields``."""
    problems = []
    for name in schema.fields:
        field = fields.get(name)
        if field is None:
            problems.append(f"field {schema.name}.{name} is missing on {conn_id!r}")
        elif field.get("type") == "alias" or not field.get("schema"):
            special = ",".join(_specials(field)) or "alias"
            problems.append(f"field {schema.name}.{name} on {conn_id!r} is a relational or presentation "
                            f"field ({special}) that has no column, and no relation the sync user may read "
                            "explains it: rerun `directus-sync provision` for this schema (it grants the "
                            "collections behind the alias), or list the junction or child collection itself "
                            "(README, Relations)")
        elif masked := [s for s in _specials(field) if s in MASKED_SPECIALS]:
            problems.append(f"field {schema.name}.{name} on {conn_id!r} is {'/'.join(masked)}: Directus "
                            "returns '**********' instead of its value through the API, so it cannot be "
                            "copied (a create would write that text, an update would never be seen); "
                            "remove it from the schema")
    if other_pk is not None:
        pk = key_field(fields)
        if pk != other_pk:
            problems.append(f"collection {schema.name!r} has primary key {pk!r} on {conn_id!r} but "
                            f"{other_pk!r} on the source")
    return problems


def references_of(schema: CollectionSchema, fields: dict[str, dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """The listed many-to-one fields and the collection each points at, from their foreign keys."""
    found = ((name, _foreign_table(fields.get(name))) for name in schema.fields)
    return tuple((name, table) for name, table in found if table)


# An instance's connection id and the fields of one collection there.
InstanceFields = tuple[str, dict[str, dict[str, Any]]]


def reference_problems(schema: CollectionSchema, source: InstanceFields, remote: InstanceFields) -> list[str]:
    """Listed many-to-one fields that point at different collections, or hold keys of different types, on the
    two instances: a key copied across would name another item, or none."""
    problems = []
    (source_id, source_fields), (remote_id, remote_fields) = source, remote
    for name in schema.fields:
        mine, theirs = source_fields.get(name), remote_fields.get(name)
        if mine is None or theirs is None:
            continue  # reported as missing
        here, there = _foreign_table(mine), _foreign_table(theirs)
        if here != there:
            problems.append(f"field {schema.name}.{name} points at {_table_text(here)} on {source_id!r} but at "
                            f"{_table_text(there)} on {remote_id!r}: make the relation the same on both instances")
        elif here and mine.get("type") != theirs.get("type"):
            problems.append(f"field {schema.name}.{name} -> {here} holds {mine.get('type')} keys on {source_id!r} "
                            f"but {theirs.get('type')} keys on {remote_id!r}")
    return problems


def _foreign_table(field: dict[str, Any] | None) -> str | None:
    table = ((field or {}).get("schema") or {}).get("foreign_key_table")
    return str(table) if table else None


def _table_text(table: str | None) -> str:
    return repr(table) if table else "no collection (not a many-to-one)"


def _specials(field: dict[str, Any]) -> list[str]:
    return list((field.get("meta") or {}).get("special") or [])


def activity_tracked(hook: DirectusHook, collection: str) -> bool:
    """Whether ``collection`` on ``hook``'s instance logs activity; unreadable settings are a schema problem."""
    try:
        return hook.activity_tracked(collection)
    except DirectusError as exc:
        if exc.status in (403, 404):
            raise SchemaMismatch(
                f"the sync user on {hook.directus_conn_id!r} may not read the settings of collection "
                f"{collection!r} (Directus answered {exc.status}); it needs read access to "
                "directus_collections: rerun `directus-sync provision`") from exc
        raise


def untracked_message(collection: str, conn_id: str) -> str:
    """Why a collection without activity tracking cannot be synced from its activity."""
    return (f"activity tracking is off for {collection} on the source {conn_id!r}: its changes leave no "
            "activity, so only full comparisons (full_resync or the reconcile DAG) see them")


def check_schema(
    schemas: Iterable[CollectionSchema], source: DirectusHook, remote: DirectusHook, *, full: bool = False,
    reconcile: bool = False,
) -> dict[str, CollectionShape]:
    """Check every listed field against both instances; raise one error listing every problem.

    A collection whose activity is not tracked on the source is a problem for an incremental run (it would
    silently miss every change) unless the remote has a reconcile DAG (``reconcile``); a ``full`` run
    compares every item, so it syncs such a collection and only says so.
    """
    shapes: dict[str, CollectionShape] = {}
    problems: list[str] = []
    for schema in schemas:
        try:
            source_fields = describe_fields(source, schema.name)
            source_pk = primary_key(source_fields, schema.name, source.directus_conn_id)
            problems += schema_problems(schema, source.directus_conn_id, source_fields)
            remote_fields = describe_fields(remote, schema.name)
            problems += schema_problems(schema, remote.directus_conn_id, remote_fields, source_pk)
            problems += reference_problems(schema, (source.directus_conn_id, source_fields),
                                           (remote.directus_conn_id, remote_fields))
            problems += _tracking_problems(source, schema.name, full, reconcile)
        except SchemaMismatch as exc:
            problems.append(str(exc))
            continue
        shapes[schema.name] = CollectionShape(schema.name, source_pk, source_fields[source_pk].get("type", ""),
                                              schema.fields, references_of(schema, source_fields))
    if problems:
        raise SchemaMismatch("the sync schema does not match the instances:\n- " + "\n- ".join(problems))
    return shapes


def _tracking_problems(source: DirectusHook, collection: str, full: bool, reconcile: bool) -> list[str]:
    """Refuse an incremental run of an untracked collection without a reconcile DAG; otherwise say so."""
    if activity_tracked(source, collection):
        return []
    untracked = untracked_message(collection, source.directus_conn_id)
    if full:
        log.warning("%s; this run compares every item, so it syncs the collection", untracked)
    elif reconcile:
        log.warning("%s; this run cannot see its changes, the reconcile DAG syncs them", untracked)
    else:
        return [f"{untracked}; {UNTRACKED_FIX}"]
    return []


def prune(item: dict[str, Any], shape: CollectionShape) -> dict[str, Any]:
    """Keep the primary key and the listed fields; drop everything else."""
    return {name: item[name] for name in shape.read_fields if name in item}
