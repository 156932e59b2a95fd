"""Files: copy the ``directus_files`` rows and binaries that synced items reference, before those items.

A listed many-to-one field to ``directus_files`` (an image or file field) holds a file id; an item naming
a file the remote lacks is refused there (a foreign key). So each apply step copies the files its items
reference first, with the same id: its folder chain (parents first), then the row and the binary, streamed
from the source's ``/assets`` into the remote's ``/files`` as one multipart body, never held whole in memory.
What the upload cannot set (the source's upload time, metadata multipart text cannot carry) is set afterwards
on up to ``FINISH_BATCH`` copies at once.

A file is sent again only when its binary changed on the source: another size, or uploaded (replaced)
after the remote's copy was (a copy carries its original's upload time, so syncing back sends nothing and
the later replacement wins); a file whose metadata alone differs gets that metadata only. Directus 12.4
keeps no checksum of a file, so size and upload time are what tell. A file changed on the source while no
item naming it is written still reaches the remote's copy (:func:`refresh_copies`). A file that cannot be
copied is logged and skipped, with the reason: the apply step does not send the items naming it (the remote
may keep a row of that id without a binary, see apply.py), which fail alone as dead letters and are retried.

A file no item references any more is left alone, unless the remote's row sets ``prune_files``: then the files
a run's updates and deletes released on the remote (planning notes the file ids the remote's items held before)
are deleted there once every write is done, if nothing references them any more: no field the sync user can
see through ``/relations`` (any collection's file fields, many-to-any fields allowing files) and none of
Directus's own (a user's avatar, the project's logo and public images), which the sync user must be able to
read, or nothing is pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from directus_sync.directus.activity import parse_timestamp
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.relations import FILES, file_holders, parse_relations, unseen_system_holders

log = logging.getLogger(__name__)

# The metadata a copy carries: what an editor sets, and what the remote accepts on a file it creates.
METADATA = ("title", "description", "tags", "location", "focal_point_x", "focal_point_y", "filename_download",
            "folder")
# What deciding whether a file changed reads on both instances.
FILE_FIELDS = ("id", *METADATA, "type", "filesize", "uploaded_on", "modified_on", "modified_by")
# Sent as multipart text fields with the binary (plain strings); the rest follows as JSON when it differs.
UPLOAD_FIELDS = ("title", "description", "filename_download", "folder")

Decision = Literal["create", "replace", "metadata"]
# The uploaded copies whose last metadata (the source's upload time, what multipart cannot carry) one
# ``PATCH /files`` sets: one request per copy cost small files a third of their copy time.
FINISH_BATCH = 100


@dataclass
class FileCopy:
    """What copying one run's referenced files did, for the run's log."""

    created: int = 0
    replaced: int = 0
    metadata: int = 0
    unchanged: int = 0
    missing: int = 0
    # The files that could not be copied, and why (the safe form of the remote's answer).
    failed: dict[str, str] = field(default_factory=dict)

    def absorb(self, other: FileCopy) -> None:
        """Count what ``other`` did too."""
        self.created += other.created
        self.replaced += other.replaced
        self.metadata += other.metadata
        self.unchanged += other.unchanged
        self.missing += other.missing
        self.failed.update(other.failed)

    def describe(self) -> str:
        return (f"{self.created} created, {self.replaced} replaced, {self.metadata} with new metadata only, "
                f"{self.unchanged} unchanged, {self.missing} not on the source, {len(self.failed)} failed")


def referenced_files(references: Mapping[str, str], records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The file ids the fields of ``references`` that point at ``directus_files`` hold in ``records``
    (staged creates are items; staged updates are ``{"key", "changes", "item"}``)."""
    fields = [f for f, related in references.items() if related == FILES]
    found: set[str] = set()
    for record in records:
        item = record.get("item") if "changes" in record else record
        for values in (item or {}, record.get("changes") or {}):
            found.update(str(values[f]) for f in fields if values.get(f))
    return found


def decide(source: Mapping[str, Any], remote: Mapping[str, Any] | None, source_wins: bool = False,
           remote_sync_user: str | None = None) -> Decision | None:
    """What the remote's copy of a file needs: nothing, its metadata, its binary replaced, or creating.

    A binary of another size is replaced, unless the remote's was uploaded later (replaced there in the same
    window, in a two-way pair): the later replacement wins, as a later edit does, except under ``source_wins``.
    Likewise metadata edited on the remote after the source's was (``modified_on``) stays there, unless the
    remote's last modification was the sync's own copy (``modified_by`` is ``remote_sync_user``): the source
    then changed since it was read for that copy.
    """
    if remote is None:
        return "create"
    source_time, remote_time = source.get("uploaded_on"), remote.get("uploaded_on")
    if _later(source_time, remote_time) or (source.get("filesize") != remote.get("filesize") and (
            source_wins or not _later(remote_time, source_time))):
        return "replace"
    if not metadata_changes(source, remote):
        return None
    edited_there = remote_sync_user is None or str(remote.get("modified_by")) != remote_sync_user
    if not source_wins and edited_there and _later(remote.get("modified_on"), source.get("modified_on")):
        return None  # edited on the remote after the source's edit: the later edit wins
    return "metadata"


def metadata_changes(source: Mapping[str, Any], remote: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of ``source`` that ``remote`` does not hold."""
    return {f: source.get(f) for f in METADATA if f in source and source.get(f) != remote.get(f)}


def copy_stamp(source: Mapping[str, Any], written: Mapping[str, Any]) -> dict[str, Any]:
    """The source's upload time, for the copy to carry instead of the time it was written on the remote.

    So the copy is as new as the original: an instance syncing the other way finds the same time and sends
    nothing back, and a later replacement on either side is the later upload, which wins.
    """
    stamp = source.get("uploaded_on")
    return {"uploaded_on": stamp} if stamp and stamp != written.get("uploaded_on") else {}


def _later(mine: Any, theirs: Any) -> bool:
    """Whether time ``mine`` is after ``theirs`` (a missing time is never later)."""
    if not mine or not theirs:
        return False
    return parse_timestamp(str(mine)) > parse_timestamp(str(theirs))


def folders_to_create(needed: Iterable[str], source_folders: Mapping[str, Mapping[str, Any]],
                      on_remote: Iterable[str]) -> list[dict[str, Any]]:
    """The folders ``needed`` and their ancestors that the remote lacks, parents before children."""
    present = set(on_remote)
    ordered: list[dict[str, Any]] = []

    def visit(folder_id: str, path: tuple[str, ...]) -> None:
        if folder_id in present or folder_id in path or folder_id not in source_folders:
            return  # on the remote, a cycle, or unknown on the source (the file's copy then fails alone)
        row = source_folders[folder_id]
        parent = row.get("parent")
        if parent:
            visit(str(parent), (*path, folder_id))
        present.add(folder_id)
        ordered.append({"id": folder_id, "name": row.get("name"), "parent": parent})

    for folder_id in sorted(set(needed)):
        visit(folder_id, ())
    return ordered


def folder_chains(source: DirectusHook, folder_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The source's folders ``folder_ids`` and all their ancestors, by id."""
    known: dict[str, dict[str, Any]] = {}
    wanted = set(folder_ids)
    while wanted:
        rows = source.folder_rows(sorted(wanted))
        known.update({str(r["id"]): r for r in rows})
        wanted = {str(r["parent"]) for r in rows if r.get("parent")} - set(known)
    return known


def ensure_folders(source: DirectusHook, target: DirectusHook, folder_ids: Iterable[str]) -> None:
    """Create on the remote, with the source's ids, the folders files are in and their ancestors."""
    wanted = set(folder_ids)
    if not wanted:
        return
    chains = folder_chains(source, wanted)
    present = {str(r["id"]) for r in target.folder_rows(sorted(chains))}
    missing = folders_to_create(wanted, chains, present)
    if missing:
        target.create_folders(missing)
        log.info("Created %d folders on %s", len(missing), target.directus_conn_id)


def copy_files(source: DirectusHook, target: DirectusHook, file_ids: Iterable[str], source_wins: bool = False,
               remote_sync_user: str | None = None) -> FileCopy:
    """Bring the remote's copy of each file in ``file_ids`` up to the source's; see the module's docstring and
    :func:`decide` (``source_wins``: the remote's conflict policy is ``source_wins``; ``remote_sync_user``: the
    sync user's id on the remote)."""
    ids = sorted(set(file_ids))
    done = FileCopy()
    if not ids:
        return done
    try:
        mine = {str(r["id"]): r for r in source.file_rows(ids, FILE_FIELDS)}
        theirs = {str(r["id"]): r for r in target.file_rows(sorted(mine), FILE_FIELDS)}
    except DirectusError as exc:
        log.warning("Could not read the files' rows (%s); their items fail as dead letters until the sync user "
                    "may read and write directus_files on both instances: run `directus-sync provision` again "
                    "with the file fields listed", exc)
        done.failed = dict.fromkeys(ids, f"its row could not be read ({exc})")
        return done
    done.missing = len(ids) - len(mine)
    try:
        ensure_folders(source, target, {str(r["folder"]) for r in mine.values() if r.get("folder")})
    except DirectusError as exc:
        log.warning("Could not create the files' folders on %s: %s", target.directus_conn_id, exc)
    unfinished: list[Uploaded] = []
    for file_id, row in mine.items():
        try:
            uploaded = _copy_one(source, target, row, theirs.get(file_id), done, source_wins, remote_sync_user)
        except DirectusError as exc:
            log.warning("Could not copy file %s to %s: %s", file_id, target.directus_conn_id, exc)
            done.failed[file_id] = str(exc)
            continue
        if uploaded is not None:
            unfinished.append(uploaded)
        if len(unfinished) >= FINISH_BATCH:
            finish(target, unfinished, done)
            unfinished = []
    finish(target, unfinished, done)
    return done


def refresh_copies(source: DirectusHook, target: DirectusHook, since: str | None, page_size: int,
                   source_wins: bool = False, remote_sync_user: str | None = None) -> FileCopy:
    """Bring up to the source's the remote's copies of the files changed on the source since ``since`` (every
    file when ``None``): a file replaced or edited there reaches the remote even when no item naming it is
    written. Files the remote has no copy of are not created: only items bring files."""
    done = FileCopy()
    for ids in source.files_changed_since(since, page_size):
        copies = [str(r["id"]) for r in target.file_rows(ids, ("id",))]
        done.absorb(copy_files(source, target, copies, source_wins, remote_sync_user))
    return done


@dataclass(frozen=True)
class Uploaded:
    """A binary just sent, and the metadata its row still needs (``rest``, empty when none)."""

    file_id: str
    decision: Decision
    rest: dict[str, Any]


def _copy_one(source: DirectusHook, target: DirectusHook, row: Mapping[str, Any],
              remote: Mapping[str, Any] | None, done: FileCopy, source_wins: bool = False,
              remote_sync_user: str | None = None) -> Uploaded | None:
    """Bring one file up to date, but for the metadata an uploaded copy still needs: returned, for
    :func:`finish` to set with others."""
    decision = decide(row, remote, source_wins, remote_sync_user)
    file_id = str(row["id"])
    if decision is None:
        done.unchanged += 1
        return None
    if decision == "metadata":
        target.update_file(file_id, metadata_changes(row, remote or {}))
        done.metadata += 1
        return None
    written = target.upload_file(file_id, upload_fields(row), str(row.get("filename_download") or file_id),
                                 str(row.get("type") or "application/octet-stream"), source.download(file_id),
                                 replace=decision == "replace")
    # What multipart text cannot carry (tags, nulls, focal points), what Directus filled in, the stamp.
    return Uploaded(file_id, decision, {**metadata_changes(row, written), **copy_stamp(row, written)})


def finish(target: DirectusHook, uploaded: Sequence[Uploaded], done: FileCopy) -> None:
    """Set the rest of the uploaded copies' metadata, in one ``PATCH /files`` (each row its own changes), and
    count them. When that is refused, each is set alone, so that a copy that cannot be finished fails alone."""
    pending = [u for u in uploaded if u.rest]
    try:
        if pending:
            target.update_files([{"id": u.file_id, **u.rest} for u in pending])
    except DirectusError as exc:
        log.warning("Could not set the metadata of %d copied files on %s at once (%s); setting each alone",
                    len(pending), target.directus_conn_id, exc)
        failed: set[str] = set()
        for u in pending:
            try:
                target.update_file(u.file_id, u.rest)
            except DirectusError as one:
                log.warning("Could not copy file %s to %s: %s", u.file_id, target.directus_conn_id, one)
                done.failed[u.file_id] = str(one)
                failed.add(u.file_id)
        uploaded = [u for u in uploaded if u.file_id not in failed]
    done.created += sum(1 for u in uploaded if u.decision == "create")
    done.replaced += sum(1 for u in uploaded if u.decision == "replace")


def upload_fields(row: Mapping[str, Any]) -> dict[str, str]:
    """The multipart text fields sent with a binary: the plain-string metadata that is set."""
    return {f: str(row[f]) for f in UPLOAD_FIELDS if row.get(f) is not None}


def staged_file_ids(plans: Sequence[tuple[Mapping[str, str], Iterable[Mapping[str, Any]]]]) -> set[str]:
    """The file ids referenced by several collections' staged records (their references, their records)."""
    found: set[str] = set()
    for references, records in plans:
        found |= referenced_files(references, records)
    return found


@dataclass
class FilePrune:
    """What pruning one run's released files did, for the run's log."""

    pruned: int = 0
    still_referenced: int = 0
    not_checked: int = 0
    problem: str | None = None

    def describe(self) -> str:
        told = f"{self.pruned} deleted, {self.still_referenced} still referenced"
        return told + (f", {self.not_checked} left alone: {self.problem}" if self.problem else "")


def prune_files(target: DirectusHook, released: Iterable[str]) -> FilePrune:
    """Delete from ``target`` the ``released`` files that nothing there references any more.

    Released files are ones the remote's items referenced before the run's writes; the references are
    read after every write, so a file an item of this run points at again is kept. A reference the sync user
    cannot read would be missed, so Directus's own file fields must all be visible (``provision`` with
    ``prune_files`` grants them) or nothing is deleted; a read or delete the remote refuses leaves the files
    where they are, with the reason in the result.
    """
    ids = sorted(set(released))
    if not ids:
        return FilePrune()
    try:
        holders = file_holders(parse_relations(target.relations()))
        unseen = unseen_system_holders(holders)
        if unseen:
            return FilePrune(not_checked=len(ids), problem=(
                f"the sync user cannot read {', '.join(unseen)}, which may hold them: run `directus-sync "
                "provision` with prune_files set on the remote's row"))
        held: set[str] = set()
        for holder in holders:
            held |= target.files_held(holder.collection, holder.field, ids, holder.kind_field)
        unreferenced = [i for i in ids if i not in held]
        target.delete_files(unreferenced)
    except DirectusError as exc:
        return FilePrune(not_checked=len(ids), problem=f"the remote refused pruning them ({exc})")
    return FilePrune(pruned=len(unreferenced), still_referenced=len(ids) - len(unreferenced))
