"""Relational content through real Airflow and real Directus: many-to-one references arrive whole.

Each test builds its collections on the instances it uses, with the relations as the Data Studio makes
them (a foreign key that sets null on delete), and compares the graph through the API after each run:
every item's key, listed fields and references.
"""

from __future__ import annotations

from typing import Any

from devtools.devserver import DirectusInstance, key_field, plain_field
from directus_sync.directus.provision import provision

from .harness import Airflow, conn_id, items, sync_token
from .test_sync_dags import run_fails, run_ok

Graph = dict[str, dict[int, dict[str, Any]]]


def build(instance: DirectusInstance, collections: dict[str, list[str]], references: dict[tuple[str, str], str]
          ) -> None:
    """Create ``collections`` (name -> string fields) and the many-to-one ``references`` ((collection, field) ->
    related collection) on ``instance``, and grant them to its sync user."""
    for name, fields in collections.items():
        instance.create_collection(name, [key_field(), *(plain_field(f) for f in fields)])
    for (name, field), related in references.items():
        instance.create_many_to_one(name, field, related)
    provision(instance.url, instance.admin_token, list(collections), token=sync_token(instance))


def graph(instance: DirectusInstance, schema: list[dict[str, Any]]) -> Graph:
    """The synced part of each collection: key -> listed fields (references are keys)."""
    return {c["name"]: {key: {f: item[f] for f in c["fields"]}
                        for key, item in items(instance, c["name"]).items()} for c in schema}


def add_remote(airflow: Airflow, name: str, source: DirectusInstance, remote: DirectusInstance,
               schema: list[dict[str, Any]]) -> str:
    return airflow.add_remote(name=name, source_conn_id=conn_id(source), remote_conn_id=conn_id(remote), schema=schema)


def test_many_to_one_references_arrive_in_dependency_order_whatever_the_listed_order(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    authors, articles = f"{collection}_authors", f"{collection}_articles"
    for instance in (a, b):
        build(instance, {authors: ["name"], articles: ["title"]}, {(articles, "author"): authors})
    # Articles listed first: the run must still create authors before the articles pointing at them.
    schema = [{"name": articles, "fields": ["title", "author"]}, {"name": authors, "fields": ["name"]}]
    made = a.api("POST", f"/items/{authors}", json=[{"name": "Ada"}, {"name": "Grace"}])
    ada, grace = (m["id"] for m in made)
    a.api("POST", f"/items/{articles}", json=[{"title": f"t{n}", "author": ada if n % 2 else grace}
                                              for n in range(6)] + [{"title": "anonymous", "author": None}])
    dag_id = add_remote(airflow, f"rel_{collection}", a, b, schema)
    run_ok(airflow, dag_id)
    assert graph(b, schema) == graph(a, schema)

    # One window: a new author, an existing article moved to it (an update pointing at a create), a new
    # article by it, and an author deleted (Directus sets its articles' author to null on both sides).
    [linus] = (m["id"] for m in a.api("POST", f"/items/{authors}", json=[{"name": "Linus"}]))
    first = min(items(a, articles))
    a.api("PATCH", f"/items/{articles}/{first}", json={"author": linus, "title": "moved"})
    a.api("POST", f"/items/{articles}", json={"title": "new", "author": linus})
    a.api("DELETE", f"/items/{authors}/{grace}")
    run_ok(airflow, dag_id)
    assert graph(b, schema) == graph(a, schema)
    assert items(b, articles)[first]["author"] == linus


def test_many_to_many_links_sync_through_the_listed_junction_as_editors_make_them(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    articles, tags, junction = f"{collection}_articles", f"{collection}_tags", f"{collection}_articles_tags"
    for instance in (a, b):
        instance.create_collection(articles, [key_field(), plain_field("title")])
        instance.create_collection(tags, [key_field(), plain_field("label")])
        mine, theirs = instance.create_many_to_many(articles, "tags", tags, junction)
        provision(instance.url, instance.admin_token, [articles, tags, junction], token=sync_token(instance))
    # The junction listed first: its rows are still written after the articles and tags they link.
    schema = [{"name": junction, "fields": [mine, theirs]}, {"name": articles, "fields": ["title"]},
              {"name": tags, "fields": ["label"]}]
    red, blue, green = (t["id"] for t in a.api("POST", f"/items/{tags}", json=[
        {"label": "red"}, {"label": "blue"}, {"label": "green"}]))
    # As the Data Studio saves an article with its tags: one nested write, junction rows included.
    first = a.api("POST", f"/items/{articles}", json={"title": "one", "tags": {
        "create": [{theirs: red}, {theirs: blue}], "update": [], "delete": []}})["id"]
    dag_id = add_remote(airflow, f"m2m_{collection}", a, b, schema)
    run_ok(airflow, dag_id)
    assert graph(b, schema) == graph(a, schema)

    # Re-linking in one window: blue removed, a new tag made and linked, another article linked to red, and
    # a tag deleted (its junction rows go with it, on both instances).
    links = {row[theirs]: row["id"] for row in items(a, junction).values()}
    [yellow] = (t["id"] for t in a.api("POST", f"/items/{tags}", json=[{"label": "yellow"}]))
    a.api("PATCH", f"/items/{articles}/{first}", json={"tags": {
        "create": [{theirs: yellow}], "update": [], "delete": [links[blue]]}})
    a.api("POST", f"/items/{articles}", json={"title": "two", "tags": {
        "create": [{theirs: red}, {theirs: green}], "update": [], "delete": []}})
    a.api("DELETE", f"/items/{tags}/{green}")
    run_ok(airflow, dag_id)
    assert graph(b, schema) == graph(a, schema)
    linked = {(row[mine], row[theirs]) for row in items(b, junction).values()}
    assert (first, yellow) in linked and (first, blue) not in linked and all(t != green for _, t in linked)


def test_listing_the_alias_field_syncs_the_junction_behind_it_with_no_other_configuration(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    articles, tags, junction = f"{collection}_articles", f"{collection}_tags", f"{collection}_articles_tags"
    # The schema as a user writes it: the alias `tags`, not the junction.
    schema = [{"name": articles, "fields": ["title", "tags"]}, {"name": tags, "fields": ["label"]}]
    for instance in (a, b):
        instance.create_collection(articles, [key_field(), plain_field("title")])
        instance.create_collection(tags, [key_field(), plain_field("label")])
        mine, theirs = instance.create_many_to_many(articles, "tags", tags, junction)
        # provision grants the junction too: it expands the alias as the runs do.
        provision(instance.url, instance.admin_token, {c["name"]: c["fields"] for c in schema},
                  token=sync_token(instance))
    red, blue = (t["id"] for t in a.api("POST", f"/items/{tags}", json=[{"label": "red"}, {"label": "blue"}]))
    first = a.api("POST", f"/items/{articles}", json={"title": "one", "tags": {
        "create": [{theirs: red}], "update": [], "delete": []}})["id"]
    dag_id = add_remote(airflow, f"alias_{collection}", a, b, schema)
    run_ok(airflow, dag_id)
    compared = [{"name": articles, "fields": ["title"]}, {"name": tags, "fields": ["label"]},
                {"name": junction, "fields": [mine, theirs]}]
    assert graph(b, compared) == graph(a, compared) and len(items(b, junction)) == 1

    links = {row[theirs]: row["id"] for row in items(a, junction).values()}
    a.api("PATCH", f"/items/{articles}/{first}", json={"title": "one, relinked", "tags": {
        "create": [{theirs: blue}], "update": [], "delete": [links[red]]}})
    run_ok(airflow, dag_id)
    assert graph(b, compared) == graph(a, compared)
    # Deselecting nulls the junction row's article (Directus's default one_deselect_action): on both instances.
    assert {row[theirs] for row in items(b, junction).values() if row[mine] == first} == {blue}


def test_a_cycle_and_a_self_reference_are_created_in_one_run(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    left, right, pages = f"{collection}_left", f"{collection}_right", f"{collection}_pages"
    for instance in (a, b):
        build(instance, {left: ["name"], right: ["name"], pages: ["title"]},
              {(left, "partner"): right, (right, "partner"): left, (pages, "parent"): pages})
    schema = [{"name": left, "fields": ["name", "partner"]}, {"name": right, "fields": ["name", "partner"]},
              {"name": pages, "fields": ["title", "parent"]}]
    # Items pointing at each other across the cycle, and a tree of pages created children first.
    lefts = [m["id"] for m in a.api("POST", f"/items/{left}", json=[{"name": f"l{n}"} for n in range(3)])]
    rights = [m["id"] for m in a.api("POST", f"/items/{right}", json=[{"name": f"r{n}", "partner": lefts[n]}
                                                                       for n in range(3)])]
    a.api("PATCH", f"/items/{left}", json=[{"id": lefts[n], "partner": rights[n]} for n in range(3)])
    root = a.api("POST", f"/items/{pages}", json={"title": "root"})["id"]
    child = a.api("POST", f"/items/{pages}", json={"title": "child", "parent": root})["id"]
    a.api("POST", f"/items/{pages}", json={"title": "grandchild", "parent": child})
    a.api("PATCH", f"/items/{pages}/{root}", json={"parent": None, "title": "root page"})
    dag_id = add_remote(airflow, f"cyc_{collection}", a, b, schema)
    run_ok(airflow, dag_id)
    assert graph(b, schema) == graph(a, schema)
    assert all(item["partner"] is not None for item in items(b, left).values())


def test_an_item_whose_reference_is_not_on_the_remote_waits_as_a_dead_letter_until_it_arrives(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    from directus_sync.state import tables
    from tests.support import rows_of

    a, c = instances["a"], instances["c"]
    authors, articles = f"{collection}_authors", f"{collection}_articles"
    for instance in (a, c):
        build(instance, {authors: ["name"], articles: ["title"]}, {(articles, "author"): authors})
    [ada] = (m["id"] for m in a.api("POST", f"/items/{authors}", json=[{"name": "Ada"}]))
    a.api("POST", f"/items/{articles}", json=[{"title": "by Ada", "author": ada}, {"title": "by nobody"}])
    # Only the articles are synced to c: Ada never arrives there by this remote.
    schema = [{"name": articles, "fields": ["title", "author"]}]
    name = f"miss_{collection}"
    dag_id = add_remote(airflow, name, a, c, schema)
    output = run_fails(airflow, dag_id)
    assert "refused 1 items" in output
    assert [item["title"] for item in items(c, articles).values()] == ["by nobody"]  # the rest is written
    [letter] = rows_of(airflow.engine(), tables.dead_letters, name)
    assert "INVALID_FOREIGN_KEY" in letter["error"]
    assert f"author -> {authors} {ada}" in letter["error"]  # names what has to arrive first

    c.api("POST", f"/items/{authors}", json={"id": ada, "name": "Ada"})  # the reference arrives (another way)
    run_ok(airflow, dag_id)  # the dead letter is retried with the source's current state
    assert graph(c, schema) == graph(a, schema)
    assert rows_of(airflow.engine(), tables.dead_letters, name) == []  # resolved: gone from the table
