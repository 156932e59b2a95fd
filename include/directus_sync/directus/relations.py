"""Directus's relations: which fields reference which collections, the order to apply collections in, and
whether two instances relate their collections alike.

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.schema import SchemaMismatch

# The largest group of collections that reference each other in a cycle for which dependency_order tries
# every order (2**n subsets); larger groups, which no real schema has, get a greedy order.
EXACT_CYCLE_LIMIT = 12
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
    on_delete: str | None = None  # the foreign key's ON DELETE; None without a foreign key (many-to-any)
    system: bool = False  # one of Directus's own relations

    @property
    def many_to_any(self) -> bool:
        """Whether this is a many-to-any item field: its target collection is named in each row."""
        return self.related_collection is None

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
    schema: Mapping[str, Any] = row.get("schema") or {}
    return Relation(
        collection=collection, field=field, related_collection=row.get("related_collection"),
        one_field=meta.get("one_field"), junction_field=meta.get("junction_field"),
        one_collection_field=meta.get("one_collection_field"),
        one_allowed_collections=tuple(meta.get("one_allowed_collections") or ()),
        sort_field=meta.get("sort_field"), on_delete=schema.get("on_delete"), system=bool(meta.get("system")))


def read_relations(hook: DirectusHook) -> list[Relation]:
    """The relations ``hook``'s sync user may see; a refused read is a schema problem saying what to grant."""
    try:
        return parse_relations(hook.relations())
    except DirectusError as exc:
        if exc.status == 403:
            raise SchemaMismatch(f"the sync user on {hook.directus_conn_id!r} may not read the relations "
                                 f"(Directus answered 403); {RELATIONS_FIX}") from exc
        raise


def references(relations: Sequence[Relation], collection: str, fields: Iterable[str]) -> dict[str, str]:
    """The many-to-one fields among ``fields`` of ``collection``, each with the collection it references,
    in the order of ``fields``.

    A many-to-any item field is left out: it has no foreign key (the database takes any value), and its
    target differs from row to row.
    """
    related = {r.field: r.related_collection for r in relations if r.collection == collection}
    return {f: target for f in fields if (target := related.get(f)) is not None}


def dependency_order(
    collections: Sequence[str], references: Mapping[str, Mapping[str, str]]
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The order to create items in, and per collection the reference fields set in a second pass.

    ``references`` gives, per collection, its many-to-one fields and the collection each references (see
    :func:`references`). Every collection comes after those it references, so related items exist when
    an item pointing to them is created; deletes go in the reverse order. References to collections not in
    ``collections`` do not order anything (they are on the remote, or not). Otherwise the given order holds:
    each collection comes where it was given, preceded by the collections it needs that are not placed yet,
    so a schema without relations keeps its order.

    A cycle (A -> B -> A, or a self reference such as ``parent``) has no such order: some references are
    deferred, the run creates the items without them and sets them in a second pass. A self reference is
    always deferred (an item may point to one created with it). Within each group of collections that
    reference each other in a cycle, the order chosen defers the fewest reference *fields* (each deferred
    field costs an update of the items that set it), found by trying every order of the group (dynamic
    programming over its subsets, exact up to :data:`EXACT_CYCLE_LIMIT` collections, greedy beyond); among
    orders deferring equally few, the fields that the order closest to the given one (lexicographically)
    defers win, so the result is deterministic. References between groups never need deferring. The
    deferred fields are exactly the references to a collection that does not come earlier in the returned
    order; collections without any are left out of the mapping.
    """
    names = list(dict.fromkeys(collections))
    rank = {name: i for i, name in enumerate(names)}
    edges = {a: _fields_per_target(references.get(a, {}), rank, a) for a in names}
    kept = {a: set(edges[a]) for a in names}
    for group in _cycle_groups(names, edges):
        ordered = _least_deferring(group, edges)
        position = {name: i for i, name in enumerate(ordered)}
        for a in group:
            kept[a] -= {b for b in kept[a] if b in position and position[b] > position[a]}
    order = _topological(names, kept, rank)
    placed = {name: i for i, name in enumerate(order)}
    deferred = {a: tuple(f for f, b in references.get(a, {}).items() if b in placed and placed[b] >= placed[a])
                for a in order}
    return order, {a: fields for a, fields in deferred.items() if fields}


def _fields_per_target(fields: Mapping[str, str], rank: Mapping[str, int], collection: str) -> dict[str, int]:
    """How many of ``collection``'s reference fields point to each other collection being ordered."""
    counts: dict[str, int] = {}
    for target in fields.values():
        if target in rank and target != collection:
            counts[target] = counts.get(target, 0) + 1
    return counts


def _cycle_groups(names: list[str], edges: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one collection, each in the given order."""
    reach = {name: _reachable(name, edges) for name in names}
    groups: list[list[str]] = []
    grouped: set[str] = set()
    for a in names:
        if a in grouped:
            continue
        group = [b for b in names if b == a or (b in reach[a] and a in reach[b])]
        grouped.update(group)
        if len(group) > 1:
            groups.append(group)
    return groups


def _reachable(start: str, edges: Mapping[str, Mapping[str, int]]) -> set[str]:
    seen: set[str] = set()
    stack = list(edges[start])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges[node])
    return seen


def _least_deferring(group: list[str], edges: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The order of ``group`` (given in the caller's order) that defers the fewest fields, ties going to
    the lexicographically smallest order."""
    if len(group) > EXACT_CYCLE_LIMIT:
        return _greedy(group, edges)
    size = len(group)
    weight = [[edges[a].get(b, 0) for b in group] for a in group]
    # best[mask]: (fields deferred, order) of the best way to place the collections in ``mask`` first. Placing
    # i after ``mask`` defers its references to the collections still to come.
    best: dict[int, tuple[int, tuple[int, ...]]] = {0: (0, ())}
    for mask in range(1, 1 << size):
        best[mask] = min(
            (best[mask ^ (1 << i)][0] + sum(weight[i][j] for j in range(size) if not mask >> j & 1),
             (*best[mask ^ (1 << i)][1], i))
            for i in range(size) if mask >> i & 1)
    return [group[i] for i in best[(1 << size) - 1][1]]


def _greedy(group: list[str], edges: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Next, always the collection deferring the fewest fields to those still to place (ties: given order)."""
    left = list(group)
    ordered: list[str] = []
    while left:
        chosen = min(left, key=lambda a: sum(n for b, n in edges[a].items() if b in left))
        ordered.append(chosen)
        left.remove(chosen)
    return ordered


def _topological(names: list[str], kept: Mapping[str, set[str]], rank: Mapping[str, int]) -> list[str]:
    """Each collection in the given order, preceded by those it still references that are not placed yet
    (themselves so placed, earliest given first): related collections move forward only as far as needed."""
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)  # ``kept`` has no cycle left, so marking before the references is safe
        for needed in sorted(kept[name], key=rank.__getitem__):
            place(needed)
        order.append(name)

    for name in names:
        place(name)
    return order


def relation_problems(
    source: Sequence[Relation], remote: Sequence[Relation], collections: Iterable[str], source_conn_id: str,
    remote_conn_id: str,
) -> list[str]:
    """How the relations touching ``collections`` differ between the source and the remote.

    Both must point each foreign-key field to the same collection, pair junction fields alike and let a
    many-to-any field reach the same collections, or items copied as they are would point elsewhere on the
    remote. Each message names both instances; they come sorted by field.
    """
    synced = set(collections)
    on_source = {(r.collection, r.field): r for r in source if synced.intersection(r.joins())}
    on_remote = {(r.collection, r.field): r for r in remote if synced.intersection(r.joins())}
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


def related_collections(relations: Sequence[Relation], collections: Iterable[str]) -> list[str]:
    """Every collection joined by a relation touching ``collections`` (junctions, related and many-to-any
    targets included), each once, in the order met: those whose keys :func:`key_type_problems` compares."""
    synced = set(collections)
    joined = (name for r in relations if synced.intersection(r.joins()) for name in r.joins())
    return list(dict.fromkeys(joined))


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
    for name, field in fields.items():
        if (field.get("schema") or {}).get("is_primary_key"):
            return name, str(field.get("type"))
    return None


def _key_text(collection: str, key: tuple[str, str] | None) -> str:
    return "missing" if key is None else f"{collection}.{key[0]} ({key[1]})"
