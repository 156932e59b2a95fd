"""Directus as it is deployed: query limits, activity horizons, late commits, skewed clocks, key forms.

Each test sets the source up the way a production instance is (started with ``QUERY_LIMIT_MAX``, months
of activity, long transactions, a database clock behind Airflow's, keys sent in upper case) and checks
that every change arrives and nothing is invented.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from devtools.devserver import (
    DirectusInstance,
    PostgresDatabase,
    ensure_directus,
    key_field,
    plain_field,
    running_instances,
)
from directus_sync.state import tables

from .conftest import RUN_TAG
from .harness import REPO, Airflow, create_collection, create_uuid_collection, run_cli
from .test_sync_dags import SYNCED, add_remote, run_ok

QUERY_LIMIT_MAX = 100
# The largest upload the capped remote accepts (FILES_MAX_UPLOAD_SIZE), as production instances often limit it.
MAX_UPLOAD = "1mb"


@pytest.fixture(scope="module")
def capped(airflow: Airflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DirectusInstance]]:
    """Two instances started as production ones often are: reads capped at 100 rows; the second (the remote)
    accepts uploads of 1 MB at most."""
    databases = {name: PostgresDatabase(f"directus_sync_e2e_{RUN_TAG}_{name}") for name in ("qa", "qb")}
    cli = ensure_directus(REPO / ".cache" / "directus")
    with running_instances(cli, list(databases.items()), tmp_path_factory.mktemp("capped"),
                           settings={"QUERY_LIMIT_MAX": str(QUERY_LIMIT_MAX)},
                           settings_of={"qb": {"FILES_MAX_UPLOAD_SIZE": MAX_UPLOAD}}) as started:
        for instance in started:
            airflow.add_instance(instance)
        yield {instance.name: instance for instance in started}
    for database in databases.values():
        database.drop()


def every_item(instance: DirectusInstance, collection: str, fields: str = "*") -> dict[Any, dict[str, Any]]:
    """Every item by key, read in pages the instance accepts (``limit=-1`` would be cut to its cap)."""
    found: dict[Any, dict[str, Any]] = {}
    while True:
        page = instance.api("GET", f"/items/{collection}", params={
            "limit": QUERY_LIMIT_MAX, "fields": fields, "sort": "id",
            **({"filter": json.dumps({"id": {"_gt": max(found)}})} if found else {})})
        found.update({item["id"]: item for item in page})
        if len(page) < QUERY_LIMIT_MAX:
            return found


def synced(instance: DirectusInstance, collection: str) -> dict[Any, dict[str, Any]]:
    return {k: {f: v[f] for f in SYNCED} for k, v in every_item(instance, collection).items()}


@contextlib.contextmanager
def source_database(instance: DirectusInstance) -> Iterator[Any]:
    """A connection to the instance's own PostgreSQL database, outside Directus."""
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=f"directus_sync_e2e_{RUN_TAG}_{instance.name}")
    try:
        yield conn
    finally:
        conn.close()


def activity_ids(instance: DirectusInstance, collection: str) -> list[int]:
    with source_database(instance) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM directus_activity WHERE collection = %s ORDER BY id", (collection,))
        return [row[0] for row in cur.fetchall()]


def ledger_rows(airflow: Airflow, name: str) -> list[dict[str, Any]]:
    with airflow.engine().connect() as conn:
        rows = conn.execute(sa.select(tables.runs).where(tables.runs.c.remote == name).order_by(tables.runs.c.id))
        return [dict(row._mapping) for row in rows]


def synced_pair(airflow: Airflow, a: DirectusInstance, b: DirectusInstance, collection: str, name: str,
                count: int, **row: object) -> str:
    """A collection on ``a`` and ``b`` with ``count`` items on ``a``, a remote ``name`` for a -> b, and its
    first run (a full copy) done; returns the DAG id."""
    create_collection(a, collection)
    create_collection(b, collection)
    a.api("POST", f"/items/{collection}", json=[{"title": f"t{n}", "views": n} for n in range(count)])
    dag_id = add_remote(airflow, name, a, b, collection, **row)
    run_ok(airflow, dag_id)
    return dag_id


def test_instances_that_cap_reads_at_100_rows_converge_over_1500_items(
        capped: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = capped["qa"], capped["qb"]
    create_collection(a, collection)
    create_collection(b, collection)
    for start in range(0, 1_500, 500):
        a.api("POST", f"/items/{collection}", json=[{"title": f"t{n}", "views": n} for n in range(start, start + 500)])
    dag_id = add_remote(airflow, f"capped_{collection}", a, b, collection)  # default batch_size: 1000

    run_ok(airflow, dag_id)
    assert synced(b, collection) == synced(a, collection)
    assert len(synced(b, collection)) == 1_500

    keys = sorted(every_item(a, collection, "id"))
    a.api("PATCH", f"/items/{collection}", json={"keys": keys[:600], "data": {"title": "edited"}})
    a.api("DELETE", f"/items/{collection}", json=keys[-300:])
    a.api("POST", f"/items/{collection}", json=[{"title": f"new {n}", "views": n} for n in range(50)])
    run_ok(airflow, dag_id)
    source, remote = synced(a, collection), synced(b, collection)
    assert len(source) == 1_250
    assert remote == source  # no delete of an item the source still has, none left behind
    assert sum(1 for item in remote.values() if item["title"] == "edited") == 600
    checked = run_cli(airflow, "check", f"capped_{collection}")
    assert "reads at most 100 rows per request" in checked.stdout, checked.stdout + checked.stderr


def test_changes_older_than_the_activity_horizon_arrive_by_full_comparison(
        capped: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    """Ages every activity row of its source, so it runs on this module's instances, after the others' use."""
    a, b = capped["qa"], capped["qb"]
    name = f"horizon_{collection}"
    dag_id = synced_pair(airflow, a, b, collection, name, 5, reconcile_prune=True)
    keys = sorted(every_item(a, collection, "id"))

    a.api("PATCH", f"/items/{collection}/{keys[0]}", json={"title": "edited long ago"})
    a.api("DELETE", f"/items/{collection}/{keys[1]}")
    a.api("POST", f"/items/{collection}", json={"title": "created long ago"})
    # The remote was paused: those changes are now 40 days old, past what unlicensed Directus shows
    # through its API (30 days). Only later activity is visible.
    with source_database(a) as conn, conn.cursor() as cur:
        cur.execute("UPDATE directus_activity SET timestamp = timestamp - interval '40 days'")
        conn.commit()
    a.api("PATCH", f"/items/{collection}/{keys[2]}", json={"title": "edited today"})

    run_ok(airflow, dag_id)
    assert synced(b, collection) == synced(a, collection)
    latest = ledger_rows(airflow, name)[-1]
    assert latest["full_copy"] and latest["full_reason"].startswith("activity horizon")


def test_a_change_committed_after_a_run_read_past_its_timestamp_arrives(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    """A transaction that started 30 minutes ago (its activity is stamped then) commits after a run.

    30 minutes is further back than any window of these runs reaches (a manual run re-reads its cron
    interval, at most 10 minutes here), so only reading by activity id finds it.
    """
    a, b = instances["a"], instances["b"]
    dag_id = synced_pair(airflow, a, b, collection, f"late_{collection}", 3)

    with source_database(a) as held, held.cursor() as cur:
        cur.execute(f'INSERT INTO "{collection}" (title, views) VALUES (%s, %s) RETURNING id', ("late", 7))
        late_key = cur.fetchone()[0]
        cur.execute("INSERT INTO directus_activity (action, collection, item, timestamp, ip, origin) "
                    "VALUES ('create', %s, %s, now() - interval '30 minutes', '127.0.0.1', 'test')",
                    (collection, str(late_key)))
        # Meanwhile an editor's change commits, with a higher activity id.
        a.api("PATCH", f"/items/{collection}/1", json={"title": "edited meanwhile"})
        run_ok(airflow, dag_id)
        assert every_item(b, collection)[1]["title"] == "edited meanwhile"
        assert late_key not in every_item(b, collection)
        held.commit()

    run_ok(airflow, dag_id)
    assert synced(b, collection) == synced(a, collection)
    assert every_item(b, collection)[late_key]["title"] == "late"


def test_a_source_database_clock_behind_airflows_loses_nothing(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    dag_id = synced_pair(airflow, a, b, collection, f"skew_{collection}", 3)

    a.api("PATCH", f"/items/{collection}/2", json={"title": "stamped by a slow clock"})
    a.api("DELETE", f"/items/{collection}/3")
    # The source's database clock is 30 minutes behind Airflow's: every row it wrote is stamped that much
    # earlier (the creates too: otherwise the run would read keys 2 and 3 for their creates in its window).
    with source_database(a) as conn, conn.cursor() as cur:
        cur.execute("UPDATE directus_activity SET timestamp = timestamp - interval '30 minutes' WHERE id = ANY(%s)",
                    (activity_ids(a, collection),))
        conn.commit()
    run_ok(airflow, dag_id)
    assert synced(b, collection) == synced(a, collection)


def test_a_full_resync_without_prune_still_carries_the_deletes_the_activity_log_shows(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    dag_id = synced_pair(airflow, a, b, collection, f"resync_{collection}", 4)
    a.api("DELETE", f"/items/{collection}/2")
    a.api("PATCH", f"/items/{collection}/3", json={"title": "edited"})
    run_ok(airflow, dag_id, full_resync=True)
    assert synced(b, collection) == synced(a, collection)



def test_items_created_with_upper_case_uuids_sync_update_and_delete(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_uuid_collection(a, collection)
    create_uuid_collection(b, collection)
    keys = [str(uuid.uuid4()).upper() for _ in range(4)]
    a.api("POST", f"/items/{collection}", json=[{"id": k, "title": f"t{n}", "views": n} for n, k in enumerate(keys)])
    name = f"uuid_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection)
    run_ok(airflow, dag_id)

    a.api("PATCH", f"/items/{collection}/{keys[0]}", json={"title": "edited"})
    a.api("DELETE", f"/items/{collection}/{keys[1]}")
    fresh = str(uuid.uuid4()).upper()
    a.api("POST", f"/items/{collection}", json={"id": fresh, "title": "new", "views": 9})
    run_ok(airflow, dag_id)
    run_ok(airflow, dag_id)  # and the next run, with the same keys in its overlap, is fine too

    def by_key(instance: DirectusInstance) -> dict[str, dict[str, Any]]:
        rows = instance.api("GET", f"/items/{collection}", params={"limit": 100, "fields": "id,title,views"})
        return {row["id"]: {"title": row["title"], "views": row["views"]} for row in rows}

    remote = by_key(b)
    assert remote == by_key(a)
    assert remote[keys[0].lower()]["title"] == "edited"
    assert keys[1].lower() not in remote and fresh.lower() in remote
    assert all(row["status"] == "success" for row in ledger_rows(airflow, name))



def test_capped_instances_sync_a_relational_graph_with_files_and_prune_them(
        capped: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    """Reads capped at 100 rows: 250 authors, 300 articles (author, image) and 600 junction rows to tags; every
    keyed read (references, junction rows, file rows, the references pruning checks) is cut to the cap."""
    from directus_sync.directus.provision import provision

    from .harness import sync_token

    a, b = capped["qa"], capped["qb"]
    authors, tags, articles = f"{collection}_au", f"{collection}_tg", f"{collection}_ar"
    schema = [{"name": articles, "fields": ["title", "author", "image", "tags"]},
              {"name": authors, "fields": ["name"]}, {"name": tags, "fields": ["label"]}]
    for instance in (a, b):
        instance.create_collection(authors, [key_field(), plain_field("name")])
        instance.create_collection(tags, [key_field(), plain_field("label")])
        instance.create_collection(articles, [key_field(), plain_field("title")])
        instance.create_many_to_one(articles, "author", authors)
        instance.create_file_field(articles, "image")
        instance.create_many_to_many(articles, "tags", tags, f"{articles}_tags")
        provision(instance.url, instance.admin_token, {c["name"]: c["fields"] for c in schema},
                  token=sync_token(instance), prune_files=True)
    images = [a.upload(f"image {n}".encode() * 50, f"i{n}.txt", "text/plain") for n in range(6)]
    author_ids = [m["id"] for m in a.api("POST", f"/items/{authors}", json=[{"name": f"a{n}"} for n in range(250)])]
    tag_ids = [m["id"] for m in a.api("POST", f"/items/{tags}", json=[{"label": f"t{n}"} for n in range(150)])]
    a.api("POST", f"/items/{articles}", json=[
        {"title": f"article {n}", "author": author_ids[n % 250], "image": images[n % 5],
         "tags": {"create": [{f"{tags}_id": tag_ids[n % 150]}, {f"{tags}_id": tag_ids[(n + 1) % 150]}],
                  "update": [], "delete": []}} for n in range(300)])
    dag_id = airflow.add_remote(name=f"capped_graph_{collection}", source_conn_id="directus_qa",
                                remote_conn_id="directus_qb", schema=schema, prune_files=True)

    def graph(instance: DirectusInstance) -> dict[str, dict[Any, dict[str, Any]]]:
        return {c: every_item(instance, c, fields) for c, fields in (
            (authors, "id,name"), (tags, "id,label"), (articles, "id,title,author,image"),
            (f"{articles}_tags", f"id,{articles}_id,{tags}_id"))}

    run_ok(airflow, dag_id)
    assert graph(b) == graph(a)
    assert len(graph(b)[f"{articles}_tags"]) == 600
    for image in images[:5]:
        assert b.asset_digest(image) == a.asset_digest(image)

    # Every article moves off image 0 (to image 5): image 0 is left unreferenced on the remote and pruned there.
    off = [k for k, item in every_item(a, articles, "id,image").items() if item["image"] == images[0]]
    a.api("PATCH", f"/items/{articles}", json={"keys": off, "data": {"image": images[5]}})
    a.api("DELETE", f"/items/{authors}", json=author_ids[:120])  # their articles' author is nulled
    run_ok(airflow, dag_id)
    assert graph(b) == graph(a)
    on_remote = b.api("GET", "/files", params={"filter": json.dumps({"id": {"_in": images}}), "fields": "id",
                                               "limit": 100})
    assert {f["id"] for f in on_remote} == set(images[1:])


def test_a_file_the_remote_refuses_fails_only_the_items_naming_it_until_it_can_be_copied(
        capped: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    """The remote refuses uploads over 1 MB: an article naming a 2 MB file waits as a dead letter naming the
    file, the other articles are written, and the letter resolves once the source points at a file that fits.

    Directus creates a file's row before it stores the binary and, refusing the binary, cannot delete the row
    again as the sync user (no delete permission): the remote keeps a row without a binary, which a foreign
    key does not tell from a copied file. The apply steps must not write the item over it."""
    from directus_sync.directus.provision import provision
    from tests.support import rows_of

    from .harness import sync_token
    from .test_sync_dags import run_fails

    a, b = capped["qa"], capped["qb"]
    for instance in (a, b):
        instance.create_collection(collection, [key_field(), plain_field("title")])
        instance.create_file_field(collection, "image")
        provision(instance.url, instance.admin_token, {collection: ["title", "image"]}, token=sync_token(instance))
    big = a.upload(b"x" * 2_000_000, "big.bin", "application/octet-stream")  # the limit is the remote's
    small = a.upload(b"small", "small.txt", "text/plain")
    made = a.api("POST", f"/items/{collection}", json=[
        {"title": "big", "image": big}, {"title": "small", "image": small}, {"title": "none"}])
    name = f"refused_file_{collection}"
    dag_id = airflow.add_remote(name=name, source_conn_id="directus_qa", remote_conn_id="directus_qb",
                                schema=[{"name": collection, "fields": ["title", "image"]}])
    output = run_fails(airflow, dag_id)
    assert f"Could not copy file {big}" in output
    assert sorted(i["title"] for i in every_item(b, collection).values()) == ["none", "small"]
    [letter] = rows_of(airflow.engine(), tables.dead_letters, name)
    assert letter["item_key"] == str(made[0]["id"]) and f"image -> directus_files {big}" in letter["error"]

    # An update naming the file fails alike (the apply_updates task): the item keeps its old image meanwhile.
    a.api("PATCH", f"/items/{collection}/{made[1]['id']}", json={"image": big})
    run_fails(airflow, dag_id)
    assert every_item(b, collection, "id,image")[made[1]["id"]]["image"] == small

    a.api("PATCH", f"/items/{collection}", json={"keys": [made[0]["id"], made[1]["id"]], "data": {"image": small}})
    run_ok(airflow, dag_id)
    assert every_item(b, collection, "id,title,image") == every_item(a, collection, "id,title,image")
    assert rows_of(airflow.engine(), tables.dead_letters, name) == []
