"""Which files a run copies, whether each changed, and in what order their folders are made."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import multipart_body
from directus_sync.directus.relations import SYSTEM_FILE_FIELDS
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


def test_a_binary_replaced_later_on_the_remote_stays_unless_the_source_wins() -> None:
    # Replaced on both instances in one window, with other sizes (e2e test_relation_graph's two-way test):
    # the later replacement, the remote's here, wins both ways under last_writer_wins; source_wins overwrites.
    remote = {**ROW, "filesize": 11, "uploaded_on": "2026-01-01T10:00:05.000Z"}
    assert decide(ROW, remote) is None
    assert decide(remote, ROW) == "replace"
    assert decide(ROW, remote, source_wins=True) == "replace"


def test_changed_metadata_alone_is_sent_alone() -> None:
    remote = {**ROW, "title": "Old", "uploaded_on": "2026-01-03T00:00:00Z"}
    assert decide(ROW, remote) == "metadata"
    assert files.metadata_changes(ROW, remote) == {"title": "Photo"}


def test_metadata_edited_later_on_the_remote_stays_unless_the_source_wins() -> None:
    # Two-way, or a full copy's refresh: the remote's title (or a replacement's filename_download) was edited
    # after the source's; under last_writer_wins the later edit stays, as it does for items and binaries.
    source = {**ROW, "title": "Old", "modified_on": "2026-01-02T10:00:00.000Z"}
    remote = {**ROW, "title": "Newer", "modified_on": "2026-01-02T11:00:00.000Z"}
    assert decide(source, remote) is None
    assert decide(remote, source) == "metadata"
    assert decide(source, remote, source_wins=True) == "metadata"
    # The remote's last modification was the sync's own copy (the source was edited after it was read for it).
    copied = {**remote, "modified_by": "sync-user"}
    assert decide(source, copied, remote_sync_user="sync-user") == "metadata"
    assert decide(source, copied, remote_sync_user="someone-else") is None


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
    assert (done.created, done.replaced, done.unchanged, done.missing, list(done.failed)) == (1, 1, 1, 1, ["bad"])
    assert "POST /files failed (400)" in done.failed["bad"]  # why, for the dead letters of the items naming it


def test_files_changed_on_the_source_refresh_the_remotes_copies_and_create_none() -> None:
    """A file replaced or edited on the source reaches the remote with no item naming it written."""
    class Changed(FakeInstance):
        def files_changed_since(self, since: str | None, page_size: int) -> Iterator[list[str]]:
            assert since == "2026-01-01T00:00:00.000Z"
            ids = sorted(self.rows)
            yield from (ids[n:n + page_size] for n in range(0, len(ids), page_size))

    source = Changed("a", [{**ROW, "id": i} for i in ("bigger", "same", "retitled", "not-copied")])
    remote = FakeInstance("b", [{**ROW, "id": "bigger", "filesize": 3}, {**ROW, "id": "same"},
                                {**ROW, "id": "retitled", "title": "Old"}])
    done = files.refresh_copies(source, remote, "2026-01-01T00:00:00.000Z", page_size=2)  # type: ignore[arg-type]
    assert {("replace", "bigger"), ("metadata", "retitled")} <= set(remote.calls)
    assert not {i for _, i in remote.calls} & {"same", "not-copied"}
    assert (done.created, done.replaced, done.metadata, done.unchanged) == (0, 1, 1, 1)


def test_files_that_cannot_be_read_fail_their_items_not_the_run() -> None:
    class Refusing(FakeInstance):
        def file_rows(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
            raise DirectusError("a", "GET", "/files", 403, "forbidden")

    done = files.copy_files(Refusing("a"), FakeInstance("b"), ["x", "y"])  # type: ignore[arg-type]
    assert list(done.failed) == ["x", "y"] and "could not be read" in done.failed["x"]


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
    assert (done.created, list(done.failed)) == (2, ["bad"])
    assert remote.batches == []  # the batch was refused: each file was set alone
    assert ("metadata", "ok") in remote.calls and ("metadata", "also") in remote.calls


# -- pruning files no item references any more (the row's prune_files) -------------------------------

SYSTEM_RELATIONS = [{"collection": c, "field": f, "related_collection": "directus_files", "meta": None}
                    for c, f in SYSTEM_FILE_FIELDS]


class PruningRemote:
    """A remote whose items hold files: ``held`` maps (collection, field) to the file ids held there."""

    directus_conn_id = "b"

    def __init__(self, relations: list[dict[str, Any]], held: dict[tuple[str, str], set[str]],
                 refuse_delete: bool = False) -> None:
        self._relations, self.held, self.refuse_delete = relations, held, refuse_delete
        self.deleted: list[str] = []
        self.asked: list[tuple[str, str, str | None]] = []

    def relations(self) -> list[dict[str, Any]]:
        return self._relations

    def files_held(self, collection: str, field: str, ids: Sequence[str], kind_field: str | None = None) -> set[str]:
        self.asked.append((collection, field, kind_field))
        return self.held.get((collection, field), set()) & set(ids)

    def delete_files(self, ids: Sequence[str]) -> None:
        if self.refuse_delete:
            raise DirectusError("b", "DELETE", "/files", 403, "forbidden")
        self.deleted += ids


ARTICLE_IMAGE = {"collection": "articles", "field": "image", "related_collection": "directus_files",
                 "meta": {"one_field": None}}
BLOCKS_ITEM = {"collection": "pages_blocks", "field": "item", "related_collection": None,
               "meta": {"one_collection_field": "collection",
                        "one_allowed_collections": ["block_text", "directus_files"]}}


def test_released_files_nothing_references_are_deleted_and_referenced_ones_kept() -> None:
    remote = PruningRemote([*SYSTEM_RELATIONS, ARTICLE_IMAGE, BLOCKS_ITEM],
                           {("articles", "image"): {"reused"}, ("directus_users", "avatar"): {"avatar"},
                            ("pages_blocks", "item"): {"in_block"}})
    done = files.prune_files(remote, ["old", "reused", "avatar", "in_block", "old"])  # type: ignore[arg-type]
    assert remote.deleted == ["old"]
    assert (done.pruned, done.still_referenced, done.problem) == (1, 3, None)
    # A many-to-any field is read only where its kind field says directus_files.
    assert ("pages_blocks", "item", "collection") in remote.asked


def test_nothing_is_pruned_when_the_sync_user_cannot_see_directus_own_file_fields() -> None:
    remote = PruningRemote([ARTICLE_IMAGE], {})
    done = files.prune_files(remote, ["old"])  # type: ignore[arg-type]
    assert remote.deleted == [] and remote.asked == []
    assert done.not_checked == 1
    assert done.problem is not None and "directus_users.avatar" in done.problem and "provision" in done.problem


def test_a_refused_delete_leaves_the_files_and_says_why() -> None:
    remote = PruningRemote(SYSTEM_RELATIONS, {}, refuse_delete=True)
    done = files.prune_files(remote, ["old"])  # type: ignore[arg-type]
    assert (done.pruned, done.not_checked) == (0, 1) and "refused" in (done.problem or "")


def test_no_released_file_reads_nothing() -> None:
    remote = PruningRemote([], {})
    assert files.prune_files(remote, []) == files.FilePrune()  # type: ignore[arg-type]
