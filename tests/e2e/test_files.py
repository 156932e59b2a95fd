"""Files through real Airflow and real Directus: an image field's files arrive with the items naming them.

The source holds files uploaded as the Data Studio uploads them (``POST /files``, multipart, some in a
folder chain) and items whose ``image`` field names them. After a run the remote holds the same file rows
(same ids) and byte-equal binaries; an unchanged file is not sent again; a replaced file arrives replaced;
a 50 MB file passes through the worker without its memory growing by the file's size.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from devtools.devserver import DirectusInstance, key_field, plain_field
from directus_sync.directus.provision import provision

from .harness import ARTIFACTS, Airflow, conn_id, items, sync_token
from .test_memory import peak_rss_kb
from .test_sync_dags import run_ok as _run_ok

FILE_FIELDS = ("id", "title", "description", "type", "filename_download", "folder", "filesize", "uploaded_on")
SCHEMA_FIELDS = ["title", "image"]
BIG = 50 * 1024 * 1024
# The worker's peak may grow by less than this over a run copying small files only (the file is 50 MB).
MEMORY_MARGIN_KB = 30 * 1024


def run_ok(airflow: Airflow, dag_id: str) -> str:
    """A successful run's log; a failed run's whole log is kept in test-artifacts/ for reading."""
    try:
        return _run_ok(airflow, dag_id)
    except AssertionError:
        ARTIFACTS.mkdir(exist_ok=True)
        result = airflow.dags_test(dag_id, datetime.now(UTC))
        (ARTIFACTS / f"{dag_id}.log").write_text(result.stdout + result.stderr)
        raise


def build(instance: DirectusInstance, articles: str) -> None:
    """``articles`` with an ``image`` file field made as the Data Studio makes it, granted to the sync user."""
    instance.create_collection(articles, [key_field(), plain_field("title")])
    instance.create_file_field(articles, "image")
    provision(instance.url, instance.admin_token, [articles], token=sync_token(instance))


def upload(instance: DirectusInstance, content: bytes | Iterator[bytes] | Path, filename: str, kind: str,
           replace: str | None = None, **fields: str) -> str:
    """Upload a file as the admin (``POST /files``, or ``PATCH /files/{id}`` to replace it); return its id."""
    url = f"{instance.url}/files/{replace}" if replace else f"{instance.url}/files"
    body = content.open("rb") if isinstance(content, Path) else content
    response = requests.request("PATCH" if replace else "POST", url, data=fields,
                                files={"file": (filename, body, kind)},
                                headers={"Authorization": f"Bearer {instance.admin_token}"}, timeout=300)
    assert response.status_code < 300, response.text[:2000]
    return str(response.json()["data"]["id"])


def asset_digest(instance: DirectusInstance, file_id: str) -> str:
    """The sha256 of a file's binary as ``/assets`` serves it, read in chunks."""
    digest = hashlib.sha256()
    with requests.get(f"{instance.url}/assets/{file_id}", stream=True, timeout=300,
                      headers={"Authorization": f"Bearer {instance.admin_token}"}) as response:
        assert response.status_code == 200, response.text[:1000]
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_rows(instance: DirectusInstance, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = instance.api("GET", "/files", params={"filter": f'{{"id":{{"_in":{list(ids)!r}}}}}'.replace("'", '"'),
                                                 "fields": ",".join(FILE_FIELDS), "limit": -1})
    return {row["id"]: row for row in rows}


def assert_same_files(a: DirectusInstance, b: DirectusInstance, ids: list[str]) -> None:
    """Same rows (id, title, type, filename_download, folder, size, upload time) and byte-equal binaries."""
    assert file_rows(b, ids) == file_rows(a, ids)
    for file_id in ids:
        assert asset_digest(b, file_id) == asset_digest(a, file_id)


def folder_chain(instance: DirectusInstance) -> tuple[str, str]:
    parent = instance.api("POST", "/folders", json={"name": "images"})["id"]
    child = instance.api("POST", "/folders", json={"name": "covers", "parent": parent})["id"]
    return str(parent), str(child)


def folders(instance: DirectusInstance) -> set[tuple[str, str, str | None]]:
    return {(f["id"], f["name"], f["parent"]) for f in instance.api("GET", "/folders", params={"limit": -1})}


def copied(output: str) -> tuple[int, int, int, int]:
    """Created, replaced, metadata-only and unchanged files, from the run's log line."""
    found = re.search(r"files referenced by this run's items: (\d+) created, (\d+) replaced, (\d+) with new "
                      r"metadata only, (\d+) unchanged", output)
    assert found, output[-4000:]
    created, replaced, metadata, unchanged = (int(n) for n in found.groups())
    return created, replaced, metadata, unchanged


def add_remote(airflow: Airflow, name: str, a: DirectusInstance, b: DirectusInstance, articles: str) -> str:
    return airflow.add_remote(name=name, source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                              schema=[{"name": articles, "fields": SCHEMA_FIELDS}])


def test_files_arrive_with_their_items_once_and_replaced_when_replaced(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        build(instance, collection)
    _, covers = folder_chain(a)
    photo = upload(a, os.urandom(300_000), "photo.jpg", "image/jpeg", title="A photo", folder=covers,
                   description="taken at dawn")
    notes = upload(a, b"plain text\n" * 1000, "notes.txt", "text/plain")
    unused = upload(a, b"never referenced", "unused.txt", "text/plain")
    a.api("POST", f"/items/{collection}", json=[{"title": "with photo", "image": photo},
                                               {"title": "with notes", "image": notes},
                                               {"title": "no image", "image": None}])
    dag_id = add_remote(airflow, f"files_{collection}", a, b, collection)

    assert copied(run_ok(airflow, dag_id))[:2] == (2, 0)
    assert_same_files(a, b, [photo, notes])
    assert not file_rows(b, [unused])  # no item references it
    assert folders(b) >= folders(a)  # the folder chain, with the same ids, names and parents
    assert items(b, collection, "id,title,image") == items(a, collection, "id,title,image")

    # An item edited, its file not: the file is not sent again.
    first = min(items(a, collection))
    a.api("PATCH", f"/items/{collection}/{first}", json={"title": "retitled"})
    assert copied(run_ok(airflow, dag_id)) == (0, 0, 0, 1)

    # The file replaced on the source (new bytes, same id) and its item edited: the remote's is replaced.
    upload(a, os.urandom(123_456), "photo-2.png", "image/png", replace=photo, title="A new photo")
    a.api("PATCH", f"/items/{collection}/{first}", json={"title": "new photo"})
    assert copied(run_ok(airflow, dag_id))[:2] == (0, 1)
    assert_same_files(a, b, [photo, notes])
    assert items(b, collection, "id,title,image") == items(a, collection, "id,title,image")

    # The other file replaced and retitled on the source, no item naming it edited: its copy still follows.
    upload(a, os.urandom(2_345), "notes-2.txt", "text/plain", replace=notes, title="New notes")
    output = run_ok(airflow, dag_id)
    refreshed = re.search(r"copies of files changed on the source since \S+: 0 created, (\d+) replaced", output)
    assert refreshed and refreshed.group(1) == "1", output[-4000:]
    assert_same_files(a, b, [photo, notes])
    assert not file_rows(b, [unused])  # files no item names are still not copied

    # Syncing the other way (two-way): the copies carry their originals' upload times, so none goes back.
    back = add_remote(airflow, f"files_back_{collection}", b, a, collection)
    b.api("PATCH", f"/items/{collection}/{first}", json={"title": "edited on b"})
    assert copied(run_ok(airflow, back)) == (0, 0, 0, 1)
    assert items(a, collection, "id,title,image")[first]["title"] == "edited on b"


def pruned(output: str) -> tuple[int, int]:
    """Deleted and still-referenced files, from the run's log line."""
    found = re.search(r"files this run's items no longer reference: (\d+) deleted, (\d+) still referenced(.*)", output)
    assert found, output[-4000:]
    assert "left alone" not in found.group(3), found.group(0)  # nothing left unchecked
    return int(found.group(1)), int(found.group(2))


def test_with_prune_files_the_files_a_run_leaves_unreferenced_on_the_remote_are_deleted_there(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        build(instance, collection)
    # On the remote only, pages with a hero image: a collection no remote syncs (the sync user could not see
    # its relation), yet provision --prune-files lets pruning read it.
    pages = f"{collection}_pages"
    b.create_collection(pages, [key_field(), plain_field("title")])
    b.create_file_field(pages, "hero")
    provision(b.url, b.admin_token, [collection], token=sync_token(b), prune_files=True)
    old, new, shared, avatar, gone, hero = (upload(a, os.urandom(2_000), f"{n}.bin", "application/octet-stream")
                                            for n in ("old", "new", "shared", "avatar", "gone", "hero"))
    made = a.api("POST", f"/items/{collection}", json=[
        {"title": "replaced", "image": old}, {"title": "deleted, shared", "image": shared},
        {"title": "keeps shared", "image": shared}, {"title": "avatar", "image": avatar},
        {"title": "deleted", "image": gone}, {"title": "hero", "image": hero}])
    replaced, deleted_shared, _, unlinked, deleted, heroic = (m["id"] for m in made)
    dag_id = airflow.add_remote(name=f"prune_{collection}", source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                                schema=[{"name": collection, "fields": SCHEMA_FIELDS}], prune_files=True)
    assert copied(run_ok(airflow, dag_id))[0] == 5
    # On the remote, a user's avatar and a page's hero are copies: references outside the synced collections.
    b.api("PATCH", "/users/me", json={"avatar": avatar})
    b.api("POST", f"/items/{pages}", json={"title": "home", "hero": hero})

    a.api("PATCH", f"/items/{collection}/{replaced}", json={"image": new})
    a.api("PATCH", f"/items/{collection}/{unlinked}", json={"image": None})
    a.api("DELETE", f"/items/{collection}", json=[deleted_shared, deleted, heroic])
    output = run_ok(airflow, dag_id)

    # old and gone deleted; shared (another item), avatar (a user) and hero (an unsynced page) kept.
    assert pruned(output) == (2, 3)
    every = [old, new, shared, avatar, gone, hero]
    assert set(file_rows(b, every)) == {new, shared, avatar, hero}
    assert set(file_rows(a, every)) == set(every)  # the source's files are never pruned
    assert [p["hero"] for p in items(b, pages).values()] == [hero]
    assert items(b, collection, "id,title,image") == items(a, collection, "id,title,image")
    gone_asset = requests.get(f"{b.url}/assets/{old}", headers={"Authorization": f"Bearer {b.admin_token}"},
                              timeout=30)
    assert gone_asset.status_code in (403, 404)  # the binary went with the row


def big_content(seed: bytes) -> Iterator[bytes]:
    """50 MB of varied bytes, produced a megabyte at a time."""
    block = hashlib.sha256(seed).digest() * 32768  # 1 MB
    for n in range(BIG // len(block)):
        yield bytes([n % 256]) + block[1:]


def test_a_fifty_megabyte_file_streams_through_the_worker_in_bounded_memory(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        build(instance, collection)
    dag_id = add_remote(airflow, f"bigfile_{collection}", a, b, collection)
    first = upload(a, os.urandom(10_000), "first.bin", "application/octet-stream")
    a.api("POST", f"/items/{collection}", json={"title": "setup", "image": first})
    run_ok(airflow, dag_id)  # the DAG's first run: every later run is measured alike

    small = upload(a, os.urandom(20_000), "small.bin", "application/octet-stream")
    a.api("POST", f"/items/{collection}", json={"title": "small", "image": small})
    baseline = peak_rss_kb(airflow, dag_id, tmp_path)

    big_file = tmp_path / "big.bin"
    with big_file.open("wb") as out:
        for chunk in big_content(collection.encode()):
            out.write(chunk)
    big = upload(a, big_file, "big.bin", "application/octet-stream", title="Fifty megabytes")
    a.api("POST", f"/items/{collection}", json={"title": "big", "image": big})
    peak = peak_rss_kb(airflow, dag_id, tmp_path)

    assert_same_files(a, b, [first, small, big])
    figures = f"baseline {baseline} kB, with a {BIG // 1024} kB file {peak} kB, margin {MEMORY_MARGIN_KB} kB"
    print(figures)
    assert peak - baseline < MEMORY_MARGIN_KB, figures
