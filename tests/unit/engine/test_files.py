"""Which files a run copies, whether each changed, and in what order their folders are made."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import multipart_body
from directus_sync.engine import files
from directus_sync.engine.files import decide, folders_to_create, referenced_files

ROW = {"id": "f1", "title": "Photo", "description": None, "tags": None, "location": None, "focal_point_x": None,
       "focal_point_y": None, "filename_download": "photo.jpg", "folder": None, "type": "image/jpeg",
       "filesize": 10, "uploaded_on": "2026-01-01T10:00:00.000Z", "modified_on": None}


def test_references_to_files_are_read_from_creates_and_from_updates_items_and_changes() -> None:
    references = {"image": "directus_files", "author": "authors", "cover": "directus_files"}
    records = [{"id": 1, "image": "a", "author": 7, "cover": None},
               {"key": "2", "changes": {"cover": "b"}, "item": {"id": 2, "image": "c", "cover": "b"}},
               {"key": "3", "changes": {"image": "d"}, "item": {"id": 3, "image": "d"}},
               {"id": 4, "author": 8}]
    assert referenced_files(references, records) == {"a", "b", "c", "d"}
    assert referenced_files({"author": "authors"}, records) == set()


def test_a_file_missing_on_the_remote_is_created() -> None:
    assert decide(ROW, None) == "create"


def test_an_unchanged_file_is_left_alone_whatever_its_modification_time() -> None:
    assert decide(ROW, {**ROW, "modified_on": "2026-01-02T00:00:00Z"}) is None
    assert decide(ROW, {**ROW, "uploaded_on": "2026-01-02T00:00:00Z"}) is None  # replaced later on the remote


def test_a_copy_carries_the_original_upload_time_so_syncing_back_sends_nothing() -> None:
    written = {**ROW, "uploaded_on": "2026-03-01T00:00:00.000Z"}
    stamped = {**written, **files.copy_stamp(ROW, written)}
    assert decide(stamped, ROW) is None and decide(ROW, stamped) is None
    assert files.copy_stamp(ROW, ROW) == {}


@pytest.mark.parametrize("remote", [{"filesize": 11}, {"uploaded_on": "2026-01-01T09:59:59.999Z"}])
def test_a_binary_of_another_size_or_uploaded_after_the_copy_is_replaced(remote: dict[str, Any]) -> None:
    assert decide(ROW, {**ROW, **remote}) == "replace"


def test_changed_metadata_alone_is_sent_alone() -> None:
    remote = {**ROW, "title": "Old", "uploaded_on": "2026-01-03T00:00:00Z"}
    assert decide(ROW, remote) == "metadata"
    assert files.metadata_changes(ROW, remote) == {"title": "Photo"}


def test_missing_folders_are_created_parents_first_and_present_ones_not_again() -> None:
    source = {"leaf": {"id": "leaf", "name": "covers", "parent": "mid"},
              "mid": {"id": "mid", "name": "2026", "parent": "root"},
              "root": {"id": "root", "name": "images", "parent": None},
              "other": {"id": "other", "name": "docs", "parent": "root"}}
    made = folders_to_create(["leaf", "other"], source, on_remote=[])
    order = [f["id"] for f in made]
    assert set(order) == {"leaf", "mid", "root", "other"}
    assert order.index("root") < order.index("mid") < order.index("leaf")
    assert order.index("root") < order.index("other")
    assert [f["id"] for f in folders_to_create(["leaf"], source, on_remote=["root"])] == ["mid", "leaf"]
    assert made[0] == {"id": "root", "name": "images", "parent": None}


def test_a_folder_cycle_or_an_unknown_folder_does_not_loop() -> None:
    source = {"x": {"id": "x", "name": "x", "parent": "y"}, "y": {"id": "y", "name": "y", "parent": "x"}}
    assert {f["id"] for f in folders_to_create(["x", "missing"], source, on_remote=[])} == {"x", "y"}


def test_the_multipart_body_carries_fields_first_then_the_content_as_it_comes() -> None:
    chunks = iter([b"abc", b"", b"def"])
    body = b"".join(multipart_body("B", {"id": "f1", "title": 'a "b"'}, "p.jpg", "image/jpeg", chunks))
    assert body == (b'--B\r\nContent-Disposition: form-data; name="id"\r\n\r\nf1\r\n'
                    b'--B\r\nContent-Disposition: form-data; name="title"\r\n\r\na "b"\r\n'
                    b'--B\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
                    b"Content-Type: image/jpeg\r\n\r\nabcdef\r\n--B--\r\n")


class FakeInstance:
    """One instance's files and folders, and the calls made to it."""

    def __init__(self, name: str, rows: Sequence[dict[str, Any]] = (), folders: Sequence[dict[str, Any]] = (),
                 refuse: Iterable[str] = (), refuse_metadata: Iterable[str] = ()) -> None:
        self.directus_conn_id = name
        self.rows = {r["id"]: dict(r) for r in rows}
        self.folders = {f["id"]: dict(f) for f in folders}
        self.refuse = set(refuse)
        self.refuse_metadata = set(refuse_metadata)
        self.calls: list[tuple[str, str]] = []
        self.batches: list[list[dict[str, Any]]] = []  # each update_files call's rows

    def file_rows(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
        return [self.rows[i] for i in ids if i in self.rows]

    def folder_rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [self.folders[i] for i in ids if i in self.folders]

    def create_folders(self, rows: Sequence[dict[str, Any]]) -> None:
        self.calls += [("folder", r["id"]) for r in rows]

    def download(self, file_id: str) -> Iterator[bytes]:
        yield b"bytes of " + file_id.encode()

    def upload_file(self, file_id: str, fields: Mapping[str, str], filename: str, content_type: str,
                    content: Iterable[bytes], replace: bool) -> dict[str, Any]:
        if file_id in self.refuse:
            raise DirectusError(self.directus_conn_id, "POST", "/files", 400, "refused")
        self.calls.append(("replace" if replace else "create", file_id))
        assert b"".join(content) == b"bytes of " + file_id.encode()
        # As Directus answers: its own title when none was sent, and the time of this upload.
        return {**ROW, "id": file_id, **fields, "title": "Filled in", "uploaded_on": "2026-05-01T00:00:00.000Z"}

    def update_file(self, file_id: str, changes: Mapping[str, Any]) -> None:
        if file_id in self.refuse_metadata:
            raise DirectusError(self.directus_conn_id, "PATCH", f"/files/{file_id}", 400, "refused")
        self.calls.append(("metadata", file_id))

    def update_files(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.refuse_metadata & {r["id"] for r in rows}:  # one transaction: all or none
            raise DirectusError(self.directus_conn_id, "PATCH", "/files", 400, "refused")
        self.batches.append([dict(r) for r in rows])
        self.calls += [("metadata", r["id"]) for r in rows]


def test_copying_creates_replaces_and_skips_and_a_failed_file_fails_alone() -> None:
    source = FakeInstance("a", [{**ROW, "id": i, "folder": "sub" if i == "new" else None}
                                for i in ("new", "same", "bigger", "bad")],
                          folders=[{"id": "sub", "name": "sub", "parent": "top"},
                                   {"id": "top", "name": "top", "parent": None}])
    remote = FakeInstance("b", [{**ROW, "id": "same", "uploaded_on": "2026-02-01T00:00:00Z"},
                                {**ROW, "id": "bigger", "filesize": 3}], refuse=["bad"])
    done = files.copy_files(source, remote, ["new", "same", "bigger", "bad", "gone"])  # type: ignore[arg-type]
    assert remote.calls[:2] == [("folder", "top"), ("folder", "sub")]
    assert ("create", "new") in remote.calls and ("replace", "bigger") in remote.calls
    assert ("metadata", "new") in remote.calls  # Directus filled in another title: set it back
    assert not any(i == "same" for _, i in remote.calls)
    assert (done.created, done.replaced, done.unchanged, done.missing, done.failed) == (1, 1, 1, 1, ["bad"])


def test_files_that_cannot_be_read_fail_their_items_not_the_run() -> None:
    class Refusing(FakeInstance):
        def file_rows(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
            raise DirectusError("a", "GET", "/files", 403, "forbidden")

    done = files.copy_files(Refusing("a"), FakeInstance("b"), ["x", "y"])  # type: ignore[arg-type]
    assert done.failed == ["x", "y"]


def test_uploaded_copies_get_their_upload_time_in_one_request_per_batch() -> None:
    ids = [f"f{n:03}" for n in range(files.FINISH_BATCH + 5)]
    source = FakeInstance("a", [{**ROW, "id": i} for i in ids])
    remote = FakeInstance("b")
    done = files.copy_files(source, remote, ids)  # type: ignore[arg-type]
    assert done.created == len(ids) and not done.failed
    assert [len(b) for b in remote.batches] == [files.FINISH_BATCH, 5]
    # Each row its own changes: the source's upload time, and the title Directus filled in set back.
    assert remote.batches[0][0] == {"id": "f000", "title": "Photo", "uploaded_on": ROW["uploaded_on"]}
    # Every binary of a batch went before its rows were finished: no request per file.
    assert remote.calls.index(("create", "f099")) < remote.calls.index(("metadata", "f000"))


def test_a_copy_whose_metadata_is_refused_fails_alone() -> None:
    source = FakeInstance("a", [{**ROW, "id": i} for i in ("ok", "bad", "also")])
    remote = FakeInstance("b", refuse_metadata=["bad"])
    done = files.copy_files(source, remote, ["ok", "bad", "also"])  # type: ignore[arg-type]
    assert (done.created, done.failed) == (2, ["bad"])
    assert remote.batches == []  # the batch was refused: each file was set alone
    assert ("metadata", "ok") in remote.calls and ("metadata", "also") in remote.calls
