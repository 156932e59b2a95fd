"""Files: copy the ``directus_files`` rows and binaries that synced items reference, before those items.

A listed many-to-one field to ``directus_files`` (an image or file field) holds a file id; an item naming
a file the remote lacks is refused there (a foreign key). So the apply step copies each referenced file
first, with the same id: its folder chain (parents first), then the row and the binary, streamed from the
source's ``/assets`` into the remote's ``/files`` as one multipart body, never held whole in memory. What
the upload cannot set (the source's upload time, metadata multipart text cannot carry) is set afterwards on
up to ``FINISH_BATCH`` copies at once.

A file is sent again only when its binary changed on the source: another size, or uploaded (replaced)
after the remote's copy was (a copy carries its original's upload time, so syncing back sends nothing and
the later replacement wins either way); a file whose metadata alone differs gets that metadata only. Directus 12.4
keeps no checksum of a file, so size and upload time are what tell. A file no item references any more
is left alone. A file that cannot be copied is logged and skipped: the items referencing it fail alone,
as dead letters naming ``directus_files <id>``, and are retried by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from directus_sync.directus.activity import parse_timestamp
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook

log = logging.getLogger(__name__)

FILES = "directus_files"
# The metadata a copy carries: what an editor sets, and what the remote accepts on a file it creates.
METADATA = ("title", "description", "tags", "location", "focal_point_x", "focal_point_y", "filename_download",
            "folder")
# What deciding whether a file changed reads on both instances.
FILE_FIELDS = ("id", *METADATA, "type", "filesize", "uploaded_on", "modified_on")
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
    failed: list[str] = field(default_factory=list)

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


def decide(source: Mapping[str, Any], remote: Mapping[str, Any] | None) -> Decision | None:
    """What the remote's copy of a file needs: nothing, its metadata, its binary replaced, or creating."""
    if remote is None:
        return "create"
    if source.get("filesize") != remote.get("filesize") or _later(source.get("uploaded_on"),
                                                                  remote.get("uploaded_on")):
        return "replace"
    return "metadata" if metadata_changes(source, remote) else None


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
    """Whether upload time ``mine`` is after ``theirs`` (a missing time is never later)."""
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


def copy_files(source: DirectusHook, target: DirectusHook, file_ids: Iterable[str]) -> FileCopy:
    """Bring the remote's copy of each file in ``file_ids`` up to the source's; see the module's docstring."""
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
        done.failed = ids
        return done
    done.missing = len(ids) - len(mine)
    try:
        ensure_folders(source, target, {str(r["folder"]) for r in mine.values() if r.get("folder")})
    except DirectusError as exc:
        log.warning("Could not create the files' folders on %s: %s", target.directus_conn_id, exc)
    unfinished: list[Uploaded] = []
    for file_id, row in mine.items():
        try:
            uploaded = _copy_one(source, target, row, theirs.get(file_id), done)
        except DirectusError as exc:
            log.warning("Could not copy file %s to %s: %s", file_id, target.directus_conn_id, exc)
            done.failed.append(file_id)
            continue
        if uploaded is not None:
            unfinished.append(uploaded)
        if len(unfinished) >= FINISH_BATCH:
            finish(target, unfinished, done)
            unfinished = []
    finish(target, unfinished, done)
    return done


@dataclass(frozen=True)
class Uploaded:
    """A binary just sent, and the metadata its row still needs (``rest``, empty when none)."""

    file_id: str
    decision: Decision
    rest: dict[str, Any]


def _copy_one(source: DirectusHook, target: DirectusHook, row: Mapping[str, Any],
              remote: Mapping[str, Any] | None, done: FileCopy) -> Uploaded | None:
    """Bring one file up to date, but for the metadata an uploaded copy still needs: returned, for
    :func:`finish` to set with others."""
    decision = decide(row, remote)
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
                done.failed.append(u.file_id)
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
