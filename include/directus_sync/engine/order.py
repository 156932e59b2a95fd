"""The order a run writes its collections in, so that every reference points at an item that exists.

A many-to-one field (``articles.author`` -> ``authors``) holds the key of an item of another collection,
and Directus refuses a value whose item is missing (``INVALID_FOREIGN_KEY``). So creates and updates go
to related collections first (authors before articles), and deletes in the reverse order (articles
before the authors they point at).

A cycle (``a.b_ref`` -> ``b``, ``b.a_ref`` -> ``a``, or a ``parent`` field pointing into its own
collection) has no such order. One reference field per cycle is *deferred*: the run creates items
without it and sets it in the update pass that follows the creates (see ``plan`` and ``apply``), when
every item of the run exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def write_order(
    collections: Sequence[str], references: Mapping[str, Mapping[str, str]]
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """``collections`` ordered so that each comes after the synced collections it references, and the
    reference fields deferred to break cycles, per collection.

    ``references`` maps a collection to its many-to-one fields and the collection each points at;
    references to collections not in ``collections`` do not constrain the order (their items are either
    on the remote already or missing, which the apply step reports). Ties keep the given order, so a
    schema without relations is written as listed. Deferred fields are chosen greedily: a self reference
    always, otherwise the edge that closes a cycle as the listed order is walked (the reference from the
    later-listed collection back to an earlier one).
    """
    synced = set(collections)
    deferred: dict[str, list[str]] = {}
    edges: dict[str, list[tuple[str, str]]] = {c: [] for c in collections}  # collection -> (field, target)
    for collection in collections:
        for field, target in sorted((references.get(collection) or {}).items()):
            if target == collection:
                deferred.setdefault(collection, []).append(field)
            elif target in synced:
                edges[collection].append((field, target))
    order: list[str] = []
    state: dict[str, str] = {}  # "open" while its dependencies are visited, "done" once placed

    def visit(collection: str) -> None:
        state[collection] = "open"
        for field, target in edges[collection]:
            if state.get(target) == "open":  # closes a cycle: set this reference in the second pass
                deferred.setdefault(collection, []).append(field)
            elif target not in state:
                visit(target)
        state[collection] = "done"
        order.append(collection)

    for collection in collections:
        if collection not in state:
            visit(collection)
    return order, {c: tuple(sorted(fields)) for c, fields in deferred.items()}
