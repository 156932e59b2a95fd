"""The order collections are written in: related collections first, cycles broken by deferring one field."""

from __future__ import annotations

from directus_sync.engine.order import write_order


def test_a_schema_without_relations_is_written_as_listed() -> None:
    assert write_order(["b", "a", "c"], {}) == (["b", "a", "c"], {})


def test_related_collections_come_first_whatever_the_listed_order() -> None:
    order, deferred = write_order(["articles", "authors", "tags"], {"articles": {"author": "authors"}})
    assert order.index("authors") < order.index("articles") and deferred == {}
    assert write_order(["authors", "articles"], {"articles": {"author": "authors"}})[0] == ["authors", "articles"]


def test_a_chain_of_references_is_written_from_its_end() -> None:
    references = {"junction": {"article": "articles", "tag": "tags"}, "articles": {"author": "authors"}}
    order, deferred = write_order(["junction", "articles", "tags", "authors"], references)
    assert order.index("authors") < order.index("articles") < order.index("junction")
    assert order.index("tags") < order.index("junction") and deferred == {}


def test_references_to_collections_not_synced_do_not_constrain_the_order() -> None:
    assert write_order(["articles"], {"articles": {"author": "authors", "owner": "directus_users"}}) == (
        ["articles"], {})


def test_a_cycle_defers_the_field_that_closes_it() -> None:
    order, deferred = write_order(["a", "b"], {"a": {"b_ref": "b"}, "b": {"a_ref": "a"}})
    assert order == ["b", "a"] and deferred == {"b": ("a_ref",)}
    # b is created without a_ref, a with b_ref (b exists by then), and b.a_ref is set in the update pass.


def test_a_self_reference_is_always_deferred() -> None:
    order, deferred = write_order(["pages"], {"pages": {"parent": "pages", "title_ref": "texts"}})
    assert order == ["pages"] and deferred == {"pages": ("parent",)}


def test_a_longer_cycle_defers_one_field_only() -> None:
    references = {"a": {"to_b": "b"}, "b": {"to_c": "c"}, "c": {"to_a": "a"}}
    order, deferred = write_order(["a", "b", "c"], references)
    assert sum(len(f) for f in deferred.values()) == 1
    (late, (field,)), = deferred.items()
    # Every reference but the deferred one points to a collection written earlier.
    position = {c: i for i, c in enumerate(order)}
    for collection, fields in references.items():
        for name, target in fields.items():
            assert (collection, name) == (late, field) or position[target] < position[collection]
