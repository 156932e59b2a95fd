"""A whole relational graph through real Airflow and real Directus, edited at random between runs.

Both instances hold ``articles`` with every kind of relation the README's "Relations" promises: a
many-to-one ``author`` -> ``authors``, a many-to-many ``tags`` through a junction, ``translations`` to
``languages`` (string key ``code``), an ``image`` file field and a many-to-any ``blocks`` to two block
collections, each made as the Data Studio makes it. The schema lists the aliases, not the junctions. Each
run follows a batch of random edits on the source, written as the Data Studio writes them (nested
creates, deselects, deletes, file uploads and replacements): after it, the remote holds the same graph,
compared through the API item by item with keys (junction rows included), and every referenced file is
byte-for-byte equal (sha256 of ``/assets/{id}``). The sequence is seeded (``GRAPH_SEED``, printed), so a
failure can be replayed (``GRAPH_RUNS`` and ``GRAPH_EDITS`` make longer ones).

A file is sometimes replaced alone (no item naming it written in the window): the run's refresh of the
remote's copies of files changed on the source must bring it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.devserver import DirectusInstance, key_field, plain_field
from directus_sync.directus.provision import provision

from .harness import Airflow, conn_id, sync_token
from .test_files import assert_same_files, asset_digest, upload
from .test_files import run_ok as run_ok_keeping_log

SEED = int(os.environ.get("GRAPH_SEED", "1812"))
RUNS = int(os.environ.get("GRAPH_RUNS", "3"))
EDITS_PER_RUN = int(os.environ.get("GRAPH_EDITS", "12"))
TWO_WAY_RUNS = int(os.environ.get("GRAPH_TWO_WAY_RUNS", "2"))
TWO_WAY_EDITS = int(os.environ.get("GRAPH_TWO_WAY_EDITS", "8"))
LANGUAGES = {"en": "English", "de": "Deutsch", "fr": "Français"}


@dataclass(frozen=True)
class Names:
    """The collections of one test (prefixed, so tests share instances but not data) and junction fields."""

    prefix: str

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"{self.prefix}_{name}"

    @property
    def article_id(self) -> str:  # the junctions' key to articles, as the Data Studio names it
        return f"{self.articles}_id"

    @property
    def tag_id(self) -> str:
        return f"{self.tags}_id"

    @property
    def language_code(self) -> str:
        return f"{self.languages}_code"

    def schema(self) -> list[dict[str, Any]]:
        """As a user writes it: the aliases, and the collections the links point at."""
        return [{"name": self.articles, "fields": ["title", "author", "image", "tags", "translations", "blocks"]},
                {"name": self.authors, "fields": ["name"]}, {"name": self.tags, "fields": ["label"]},
                {"name": self.languages, "fields": ["name"]}, {"name": self.block_text, "fields": ["text"]},
                {"name": self.block_quote, "fields": ["quote", "attribution"]}]

    def compared(self) -> dict[str, list[str]]:
        """Every collection of the graph with the fields both instances must hold alike (keys aside)."""
        return {self.articles: ["title", "author", "image"], self.authors: ["name"], self.tags: ["label"],
                self.languages: ["name"], self.block_text: ["text"], self.block_quote: ["quote", "attribution"],
                self.articles_tags: [self.article_id, self.tag_id],
                self.articles_translations: [self.article_id, self.language_code, "title"],
                self.articles_blocks: [self.article_id, "item", "collection"]}


def build(instance: DirectusInstance, n: Names, key: str = "integer") -> None:
    """The graph's collections and relations, as the Data Studio makes them, granted to the sync user. ``key``:
    the type of every key but the languages' (``uuid`` where both instances create items)."""
    instance.create_collection(n.authors, [key_field(key), plain_field("name")])
    instance.create_collection(n.tags, [key_field(key), plain_field("label")])
    instance.create_collection(n.block_text, [key_field(key), plain_field("text", "text")])
    instance.create_collection(n.block_quote, [key_field(key), plain_field("quote", "text"),
                                               plain_field("attribution")])
    instance.create_collection(n.articles, [key_field(key), plain_field("title")])
    instance.create_many_to_one(n.articles, "author", n.authors, key)
    instance.create_file_field(n.articles, "image")
    instance.create_many_to_many(n.articles, "tags", n.tags, n.articles_tags, key)
    instance.create_translations(n.articles, n.articles_translations, n.languages, [plain_field("title")],
                                 key_type=key)
    instance.create_many_to_any(n.articles, "blocks", [n.block_text, n.block_quote], n.articles_blocks, key)
    provision(instance.url, instance.admin_token, {c["name"]: c["fields"] for c in n.schema()},
              token=sync_token(instance))


RECORDED = Path(__file__).parents[1] / "unit" / "directus" / "relations_directus_12.4.0.json"
COMPARED_META = ("one_field", "junction_field", "one_collection_field", "one_allowed_collections", "sort_field",
                 "one_deselect_action")


def assert_made_as_the_studio_makes_it(instance: DirectusInstance, n: Names) -> None:
    """The relations :func:`build` made are those the Data Studio made on the recorded instance (its rows, with
    this test's names): kinds, junction pairs, many-to-any targets, and what deleting an item does."""
    renamed = {name: getattr(n, name) for name in ("articles", "authors", "tags", "languages", "articles_tags",
                                                   "articles_translations", "articles_blocks", "block_text",
                                                   "block_quote")}
    renamed.update({"articles_id": n.article_id, "tags_id": n.tag_id, "languages_code": n.language_code})

    def shape(row: dict[str, Any]) -> tuple[Any, ...]:
        meta, schema = row.get("meta") or {}, row.get("schema") or {}
        named = [renamed.get(v, v) if isinstance(v, str) else v for v in (
            row["collection"], row["field"], row["related_collection"], *(meta.get(k) for k in COMPARED_META))]
        allowed = named[6]
        named[6] = sorted(renamed.get(c, c) for c in allowed) if allowed else None
        # The m2m junction of devserver.create_many_to_many cascades (its rows go with either side's item).
        on_delete = None if row["collection"] in ("articles_tags", n.articles_tags) else schema.get("on_delete")
        return (*named, on_delete)

    recorded = [r for r in json.loads(RECORDED.read_text())
                if r["collection"] in renamed and r["field"] != "parent"]
    made = [r for r in instance.api("GET", "/relations") if r["collection"] in renamed.values()]
    assert sorted(map(shape, made), key=repr) == sorted(map(shape, recorded), key=repr)


def rows(instance: DirectusInstance, collection: str, key: str = "id") -> dict[Any, dict[str, Any]]:
    """Every item of ``collection`` by key, read as the admin."""
    return {item[key]: item for item in instance.api("GET", f"/items/{collection}",
                                                     params={"limit": -1, "fields": "*", "sort": key})}


def graph(instance: DirectusInstance, n: Names) -> dict[str, dict[Any, dict[str, Any]]]:
    """Each collection of the graph: key -> compared fields (references are keys)."""
    return {name: {key: {f: item[f] for f in fields}
                   for key, item in rows(instance, name, "code" if name == n.languages else "id").items()}
            for name, fields in n.compared().items()}


def referenced_files(instance: DirectusInstance, n: Names) -> list[str]:
    return sorted({item["image"] for item in rows(instance, n.articles).values() if item["image"]})


class Editor:
    """Random edits on one instance, as an editor makes them in the Data Studio."""

    def __init__(self, instance: DirectusInstance, n: Names, rng: random.Random, uuids: bool = False) -> None:
        """``uuids``: the collections have UUID keys, which the editor draws from ``rng`` (so a seed replays the
        same picks), and it deletes no items (see the two-way test)."""
        self.instance, self.n, self.rng, self.uuids, self.deletes = instance, n, rng, uuids, not uuids
        self.done: list[str] = []
        self.counter = 0

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.instance.api(method, path, **kwargs)

    def key(self) -> dict[str, str]:
        """A new item's key, when the editor chooses it."""
        return {"id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4))} if self.uuids else {}

    def text(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter}"

    def keys(self, collection: str) -> list[Any]:
        return sorted(rows(self.instance, collection))

    def pick(self, collection: str) -> Any:
        keys = self.keys(collection)
        return self.rng.choice(keys) if keys else None

    def file_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(2_000, 40_000))

    # -- the edits: each returns a description, or None when it does not apply now -----------------------

    def create_author(self) -> str:
        key = self.api("POST", f"/items/{self.n.authors}", json={"name": self.text("author"), **self.key()})["id"]
        return f"author {key} created"

    def update_author(self) -> str | None:
        if (key := self.pick(self.n.authors)) is None:
            return None
        self.api("PATCH", f"/items/{self.n.authors}/{key}", json={"name": self.text("renamed author")})
        return f"author {key} renamed"

    def delete_author(self) -> str | None:
        if len(keys := self.keys(self.n.authors)) < 2:
            return None
        key = self.rng.choice(keys)
        self.api("DELETE", f"/items/{self.n.authors}/{key}")  # its articles' author becomes null (SET NULL)
        return f"author {key} deleted"

    def create_tag(self) -> str:
        key = self.api("POST", f"/items/{self.n.tags}", json={"label": self.text("tag"), **self.key()})["id"]
        return f"tag {key} created"

    def delete_tag(self) -> str | None:
        if len(keys := self.keys(self.n.tags)) < 3:
            return None
        key = self.rng.choice(keys)
        self.api("DELETE", f"/items/{self.n.tags}/{key}")  # its junction rows go with it (CASCADE)
        return f"tag {key} deleted"

    def new_block(self) -> dict[str, Any]:
        if self.rng.random() < 0.5:
            return {"collection": self.n.block_text, "item": {"text": self.text("paragraph"), **self.key()},
                    **self.key()}
        return {"collection": self.n.block_quote, "item": {"quote": self.text("quote"), "attribution": "someone",
                                                           **self.key()}, **self.key()}

    def create_article(self) -> str:
        """One nested write, as the Data Studio saves a new article: links, translations and blocks with it."""
        n, rng = self.n, self.rng
        tags = rng.sample(self.keys(n.tags), k=min(rng.randint(0, 2), len(self.keys(n.tags))))
        languages = rng.sample(sorted(LANGUAGES), k=rng.randint(0, 2))
        image = upload(self.instance, self.file_bytes(), "cover.bin", "application/octet-stream",
                       title=self.text("cover")) if rng.random() < 0.5 else None
        key = self.api("POST", f"/items/{n.articles}", json={
            "title": self.text("article"), "author": self.pick(n.authors), "image": image, **self.key(),
            "tags": {"create": [{n.tag_id: t, **self.key()} for t in tags], "update": [], "delete": []},
            "translations": {"create": [{n.language_code: code, "title": self.text(f"title {code}"), **self.key()}
                                        for code in languages], "update": [], "delete": []},
            "blocks": {"create": [self.new_block() for _ in range(rng.randint(0, 2))], "update": [], "delete": []},
        })["id"]
        return f"article {key} created (tags {tags}, translations {languages}, image {image})"

    def update_article(self) -> str | None:
        if (key := self.pick(self.n.articles)) is None:
            return None
        self.api("PATCH", f"/items/{self.n.articles}/{key}", json={"title": self.text("edited article")})
        return f"article {key} retitled"

    def relink_author(self) -> str | None:
        if (key := self.pick(self.n.articles)) is None:
            return None
        author = self.pick(self.n.authors) if self.rng.random() < 0.8 else None
        self.api("PATCH", f"/items/{self.n.articles}/{key}", json={"author": author})
        return f"article {key} -> author {author}"

    def delete_article(self) -> str | None:
        if len(keys := self.keys(self.n.articles)) < 3:
            return None
        key = self.rng.choice(keys)
        self.api("DELETE", f"/items/{self.n.articles}/{key}")  # its junction rows keep a null article
        return f"article {key} deleted"

    def links(self, junction: str, article: int) -> dict[int, dict[str, Any]]:
        return {k: row for k, row in rows(self.instance, junction).items() if row[self.n.article_id] == article}

    def add_tag(self) -> str | None:
        n = self.n
        if (key := self.pick(n.articles)) is None or (tag := self.pick(n.tags)) is None:
            return None
        self.api("PATCH", f"/items/{n.articles}/{key}", json={
            "tags": {"create": [{n.tag_id: tag, **self.key()}], "update": [], "delete": []}})
        return f"article {key} tagged {tag}"

    def remove_tag(self) -> str | None:
        n = self.n
        linked = [(row[n.article_id], k) for k, row in rows(self.instance, n.articles_tags).items()
                  if row[n.article_id] is not None]
        if not linked:
            return None
        article, link = self.rng.choice(linked)
        self.api("PATCH", f"/items/{n.articles}/{article}", json={  # a deselect: the row's article is nulled
            "tags": {"create": [], "update": [], "delete": [link]}})
        return f"article {article} untagged (junction row {link})"

    def edit_translation(self) -> str | None:
        """Add a missing language, change an existing translation, or remove one: one nested write."""
        n = self.n
        if (key := self.pick(n.articles)) is None:
            return None
        have = {row[n.language_code]: k for k, row in self.links(n.articles_translations, key).items()}
        missing = sorted(set(LANGUAGES) - set(have))
        choice = self.rng.choice(["add", "change", "remove"] if have and missing else ["change", "remove"]
                                 if have else ["add"])
        nested: dict[str, list[Any]] = {"create": [], "update": [], "delete": []}
        if choice == "add":
            code = self.rng.choice(missing)
            nested["create"].append({n.language_code: code, "title": self.text(f"title {code}"), **self.key()})
        elif choice == "change":
            code = self.rng.choice(sorted(have))
            nested["update"].append({"id": have[code], "title": self.text(f"new title {code}")})
        else:
            code = self.rng.choice(sorted(have))
            nested["delete"].append(have[code])
        self.api("PATCH", f"/items/{n.articles}/{key}", json={"translations": nested})
        return f"article {key}: translation {code} {choice}"

    def add_block(self) -> str | None:
        if (key := self.pick(self.n.articles)) is None:
            return None
        block = self.new_block()
        self.api("PATCH", f"/items/{self.n.articles}/{key}", json={
            "blocks": {"create": [block], "update": [], "delete": []}})
        return f"article {key}: {block['collection']} block added"

    def remove_block(self) -> str | None:
        n = self.n
        linked = [(row[n.article_id], k) for k, row in rows(self.instance, n.articles_blocks).items()
                  if row[n.article_id] is not None]
        if not linked:
            return None
        article, link = self.rng.choice(linked)
        self.api("PATCH", f"/items/{n.articles}/{article}", json={
            "blocks": {"create": [], "update": [], "delete": [link]}})
        return f"article {article}: block row {link} removed"

    def edit_block(self) -> str | None:
        n = self.n
        collection = self.rng.choice([n.block_text, n.block_quote])
        if (key := self.pick(collection)) is None:
            return None
        changes = {"text": self.text("edited paragraph")} if collection == n.block_text else {
            "quote": self.text("edited quote")}
        self.api("PATCH", f"/items/{collection}/{key}", json=changes)
        return f"{collection} {key} edited"

    def delete_block(self) -> str | None:
        """A block item deleted: the junction rows naming it keep its key (``item`` has no foreign key)."""
        n = self.n
        collection = self.rng.choice([n.block_text, n.block_quote])
        if (key := self.pick(collection)) is None:
            return None
        self.api("DELETE", f"/items/{collection}/{key}")
        return f"{collection} {key} deleted"

    def new_image(self) -> str | None:
        if (key := self.pick(self.n.articles)) is None:
            return None
        image = upload(self.instance, self.file_bytes(), "photo.bin", "application/octet-stream",
                       title=self.text("photo"))
        self.api("PATCH", f"/items/{self.n.articles}/{key}", json={"image": image})
        return f"article {key} -> new image {image}"

    def replace_image(self, image: str | None = None, content: bytes | None = None) -> str | None:
        """A file replaced under its id (sometimes with as many bytes as before), and, for a file given or half
        the time, a new article naming it: the remote's copy must be replaced either way."""
        n = self.n
        articles = rows(self.instance, n.articles)
        images = list(dict.fromkeys(a["image"] for a in articles.values() if a["image"]))  # in the articles' order
        if not images and image is None:
            return None
        alone = image is None and self.rng.random() < 0.5
        image = image or self.rng.choice(images)
        size = self.instance.api("GET", f"/files/{image}", params={"fields": "filesize"})["filesize"]
        if content is None:
            content = self.rng.randbytes(int(size)) if self.rng.random() < 0.5 else self.file_bytes()
        upload(self.instance, content, "replaced.bin", "application/octet-stream", replace=image,
               title=self.text("replaced"))
        if alone:
            return f"file {image} replaced ({len(content)} bytes), alone"
        key = self.api("POST", f"/items/{n.articles}", json={"image": image, "title": self.text("reimaged"),
                                                             **self.key()})["id"]
        return f"file {image} replaced ({len(content)} bytes), new article {key} names it"

    def edits(self) -> list[Callable[[], str | None]]:
        edits = [self.create_author, self.update_author, self.create_tag, self.create_article, self.create_article,
                 self.update_article, self.relink_author, self.add_tag, self.add_tag, self.remove_tag,
                 self.edit_translation, self.edit_translation, self.add_block, self.remove_block, self.edit_block,
                 self.new_image, self.replace_image]
        if self.deletes:
            edits += [self.delete_author, self.delete_tag, self.delete_article, self.delete_block]
        return edits

    def seed(self) -> None:
        """A starting graph: languages, a few authors and tags, and articles made with their links."""
        self.api("POST", f"/items/{self.n.languages}", json=[{"code": c, "name": v} for c, v in LANGUAGES.items()])
        for _ in range(2):
            self.create_author()
        for _ in range(3):
            self.create_tag()
        for _ in range(3):
            self.done.append(self.create_article())

    def batch(self, count: int) -> None:
        while count:
            if (done := self.rng.choice(self.edits())()) is not None:
                self.done.append(done)
                count -= 1


def assert_same_graph(a: DirectusInstance, b: DirectusInstance, n: Names, *editors: Editor) -> None:
    source, remote = graph(a, n), graph(b, n)
    for name in source:
        assert remote[name] == source[name], (f"{name} differs after: {[e.done for e in editors]}", name)
    assert_same_files(a, b, sorted({*referenced_files(a, n), *referenced_files(b, n)}))


def test_a_random_graph_of_every_relation_kind_arrives_whole_run_after_run(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    n = Names(collection)
    for instance in (a, b):
        build(instance, n)
    assert_made_as_the_studio_makes_it(a, n)
    print(f"GRAPH_SEED={SEED}")
    editor = Editor(a, n, random.Random(SEED))
    editor.seed()
    dag_id = airflow.add_remote(name=f"graph_{collection}", source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                                schema=n.schema())
    run_ok_keeping_log(airflow, dag_id)
    assert_same_graph(a, b, n, editor)
    for run in range(RUNS):
        editor.batch(EDITS_PER_RUN)
        print(f"run {run + 1}: {editor.done[-EDITS_PER_RUN:]}")
        run_ok_keeping_log(airflow, dag_id)
        assert_same_graph(a, b, n, editor)


def test_two_way_edits_on_both_sides_of_the_graph_converge(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    """A two-way pair, UUID keys everywhere (as the README asks where both instances create items): each round
    edits both sides (creates, updates, links made and deselected, translations, blocks, files uploaded and
    replaced; no item deletes, whose database-side nulling of links logs no activity), then runs a -> b and
    b -> a; both hold the same graph and byte-equal files."""
    a, b = instances["a"], instances["b"]
    n = Names(collection)
    for instance in (a, b):
        build(instance, n, "uuid")
    print(f"GRAPH_SEED={SEED}")
    rng = random.Random(SEED + 1)
    on_a, on_b = Editor(a, n, rng, uuids=True), Editor(b, n, rng, uuids=True)
    on_a.seed()
    shared = upload(a, rng.randbytes(5_000), "shared.bin", "application/octet-stream", title="shared")
    a.api("PATCH", f"/items/{n.articles}/{min(rows(a, n.articles))}", json={"image": shared})
    ab = airflow.add_remote(name=f"graph_ab_{collection}", source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                            schema=n.schema())
    ba = airflow.add_remote(name=f"graph_ba_{collection}", source_conn_id=conn_id(b), remote_conn_id=conn_id(a),
                            schema=n.schema())
    run_ok_keeping_log(airflow, ab)
    run_ok_keeping_log(airflow, ba)
    assert_same_graph(a, b, n, on_a)
    for run in range(TWO_WAY_RUNS):
        on_a.batch(TWO_WAY_EDITS)
        on_b.batch(TWO_WAY_EDITS)
        if run == 0:  # one file replaced on both sides in the window, with other sizes: b's, the later, wins
            on_a.done.append(str(on_a.replace_image(shared, rng.randbytes(6_000))))
            on_b.done.append(str(on_b.replace_image(shared, later := rng.randbytes(7_000))))
        print(f"round {run + 1}: on a {on_a.done[-TWO_WAY_EDITS:]}, on b {on_b.done[-TWO_WAY_EDITS:]}")
        run_ok_keeping_log(airflow, ab)
        run_ok_keeping_log(airflow, ba)
        assert_same_graph(a, b, n, on_a, on_b)
        if run == 0:
            assert asset_digest(a, shared) == hashlib.sha256(later).hexdigest()
