"""Pre-flight check of one remote: connections, tokens, permissions and fields on both instances.

Each problem comes with what to do about it, so ``directus-sync check`` can print a to-do list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from directus_sync.config import RemoteSource
from directus_sync.directus.errors import DirectusError
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.provision import CRUD_ACTIONS, FILE_PERMISSIONS, PRUNE_PERMISSIONS, UNENFORCED_NOTE
from directus_sync.directus.relations import (
    effective_schema,
    key_type_problems,
    of_listed_fields,
    read_relations,
    related_collections,
    relation_problems,
)
from directus_sync.directus.schema import (
    UNTRACKED_FIX,
    SchemaMismatch,
    activity_tracked,
    describe_fields,
    primary_key,
    references_of,
    schema_problems,
    untracked_message,
)
from directus_sync.engine.staging import SHARED_ENV, STAGING_URL_ENV, sharing_problem

log = logging.getLogger(__name__)

PROVISION_FIX = "run `directus-sync provision --url URL --schema ...` with an admin token"
LICENCE_FIX = ("a Directus licence with custom permission rules lets `directus-sync provision` limit it (see the "
               "README, \"A sync user on each instance\")")


@dataclass(frozen=True)
class Problem:
    """Something that stops the sync, where it is, and what fixes it; a note only deserves a look."""

    where: str
    problem: str
    fix: str
    note: bool = False


def check_remote(remote: RemoteSource) -> list[Problem]:
    """Every problem found on the source and remote instances of ``remote``."""
    problems = _staging_problems(remote)
    hooks = {role: DirectusHook(conn_id, timeout=15, retries=1)
             for role, conn_id in (("source", remote.source_conn_id), ("remote", remote.remote_conn_id))}
    remote = _with_aliases_expanded(remote, hooks["source"])
    fields: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for role, hook in hooks.items():
        conn_id = hook.directus_conn_id
        where = f"{role} {conn_id}"
        access = _check_access(hook, where, problems)
        if access is None:
            continue
        needed = [(c, a) for c in remote.collections for a in CRUD_ACTIONS]
        needed += [("directus_activity", "read"), ("directus_fields", "read"), ("directus_relations", "read")]
        if role == "source":
            needed.append(("directus_collections", "read"))  # whether activity is tracked
        if role == "source" and remote.notify_users:
            needed.append(("directus_notifications", "create"))
        for collection, action in needed:
            if not _may(access, collection, action):
                problems.append(Problem(where, f"the sync user may not {action} {collection}", PROVISION_FIX))
        problems += _exposure_notes(hook, access, where)
        fields[role] = {}
        for schema in remote.sync_schema:
            try:
                fields[role][schema.name] = describe_fields(hook, schema.name)
            except (SchemaMismatch, DirectusError) as exc:
                problems.append(Problem(where, str(exc), "create the collection or grant the sync user access"))
        if role == "source" and _may(access, "directus_collections", "read"):
            problems += _tracking_problems(remote, hook, where, list(fields[role]))
        for collection, action in _file_permissions(remote, fields[role], role):
            if not _may(access, collection, action):
                problems.append(Problem(where, f"the sync user may not {action} {collection}, which the listed file "
                                        "fields need", PROVISION_FIX + " (with --prune-files where the row sets "
                                        "prune_files)"))
    if len(fields) == 2:
        problems += _field_problems(remote, fields["source"], fields["remote"])
        problems += _relation_problems(remote, hooks["source"], hooks["remote"])
    return problems


def _file_permissions(remote: RemoteSource, fields: dict[str, dict[str, dict[str, Any]]], role: str
                      ) -> list[tuple[str, str]]:
    """What copying (and, on the remote with ``prune_files``, pruning) the listed file fields' files takes."""
    listed = [s for s in remote.sync_schema if s.name in fields]
    if not any(table == "directus_files" for s in listed for _, table in references_of(s, fields[s.name])):
        return []
    needed = list(FILE_PERMISSIONS)
    if role == "remote" and remote.prune_files:
        needed += list(PRUNE_PERMISSIONS)
    return needed


def _with_aliases_expanded(remote: RemoteSource, source: DirectusHook) -> RemoteSource:
    """``remote`` with the schema its runs sync (listed aliases replaced by the collections behind them), so
    that their permissions and fields are checked too; as listed when the source cannot say (reported below)."""
    try:
        schemas = effective_schema(source, remote.sync_schema)
    except Exception as exc:  # an unknown connection, a refused token...: the checks that follow say which
        log.debug("Aliases not expanded: %s", exc)
        return remote
    return remote.model_copy(update={"sync_schema": schemas})


def _relation_problems(remote: RemoteSource, source: DirectusHook, target: DirectusHook) -> list[Problem]:
    """The relations of the listed fields, and the keys of the collections they join, on both instances."""
    try:
        on_source, on_remote = read_relations(source), read_relations(target)
    except (SchemaMismatch, DirectusError) as exc:  # a missing grant is reported above
        log.debug("Relations not compared: %s", exc)
        return []
    listed = {schema.name: schema.fields for schema in remote.sync_schema}
    texts = relation_problems(on_source, on_remote, listed, remote.source_conn_id, remote.remote_conn_id)
    problems = [Problem(remote.remote_conn_id, text, "make the relation the same on both instances") for text in texts]
    joined = related_collections(of_listed_fields(on_source, listed))
    keys = {role: _fields_of(hook, joined) for role, hook in (("source", source), ("remote", target))}
    for text in key_type_problems(joined, keys["source"], keys["remote"], remote.source_conn_id,
                                  remote.remote_conn_id):
        problems.append(Problem(remote.remote_conn_id, text, "give the collection the same key on both instances"))
    return problems


def _fields_of(hook: DirectusHook, collections: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The fields of each of ``collections`` the sync user may read (others are left out of the comparison)."""
    found = {}
    for collection in collections:
        try:
            found[collection] = describe_fields(hook, collection)
        except (SchemaMismatch, DirectusError):
            continue
    return found


def _staging_problems(remote: RemoteSource) -> list[Problem]:
    """Staging the run's tasks could not share (event mode's single task needs no sharing, its reconcile does)."""
    hands_over = not remote.listens_to_events or bool(remote.reconcile_schedule)
    problem = sharing_problem() if hands_over else None
    if problem is None:
        return []
    return [Problem("staging", problem, f"set {STAGING_URL_ENV} (or {SHARED_ENV}=true for a shared mount) "
                    "in every Airflow component's environment")]


def _may(access: dict[str, Any], collection: str, action: str) -> bool:
    """Whether ``/permissions/me`` (``access``) lets the sync user do ``action`` on ``collection``."""
    return (access.get(collection, {}).get(action) or {}).get("access", "none") != "none"


def _exposure_notes(hook: DirectusHook, access: dict[str, Any], where: str) -> list[Problem]:
    """A note when the sync user may read the activity of every collection (no permission filter), and why:
    Directus's core licence does not enforce permission filters or field limits."""
    activity = access.get("directus_activity", {}).get("read") or {}
    if activity.get("access") != "full":
        return []
    try:
        licence = ((hook.request("GET", "/server/info") or {}).get("license") or {})
    except DirectusError as exc:
        log.debug("No licence information from %s: %s", hook.directus_conn_id, exc)
        licence = {"source": "unknown"}
    if licence.get("source") is None:  # the core licence: no key from the environment or the database
        return [Problem(where, UNENFORCED_NOTE, LICENCE_FIX, note=True)]
    return [Problem(where, "the sync user can read the activity of every collection, with IP addresses and user "
                    "agents", "run `directus-sync provision --schema ...` again: it limits that read to the "
                    "synced collections where the licence allows custom permission rules", note=True)]


def _tracking_problems(remote: RemoteSource, hook: DirectusHook, where: str, collections: list[str]
                       ) -> list[Problem]:
    """Source collections whose changes leave no activity: only a reconcile DAG would ever sync them."""
    problems: list[Problem] = []
    for collection in collections:
        try:
            if activity_tracked(hook, collection):
                continue
        except (SchemaMismatch, DirectusError) as exc:
            problems.append(Problem(where, str(exc), PROVISION_FIX))
            continue
        text = untracked_message(collection, hook.directus_conn_id)
        if remote.reconcile_schedule:
            problems.append(Problem(where, text, f"none needed: the reconcile DAG ({remote.reconcile_schedule}) "
                                    "syncs it; incremental runs do not", note=True))
        else:
            problems.append(Problem(where, text, UNTRACKED_FIX))
    return problems


def _check_access(hook: DirectusHook, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The sync user's permissions, or ``None`` after recording why the instance cannot be used."""
    try:
        hook.current_user_id()
        access: dict[str, Any] = hook.request("GET", "/permissions/me") or {}
        return access
    except DirectusError as exc:
        if exc.status == 401:
            problems.append(Problem(where, "the token is rejected (401)",
                                    "set the connection's password to the sync user's static token"))
        elif exc.status is None:
            problems.append(Problem(where, f"the instance is not reachable: {exc}",
                                    "check the connection's host (the instance URL) and the network"))
        else:
            problems.append(Problem(where, exc.detail, "see Directus's message"))  # a terminal, like a log
    except Exception as exc:
        problems.append(Problem(where, f"connection {hook.directus_conn_id!r} cannot be used: {exc}",
                                "define it: conn_type http, host = instance URL, password = sync token"))
    return None


def _field_problems(
    remote: RemoteSource,
    source: dict[str, dict[str, dict[str, Any]]],
    target: dict[str, dict[str, dict[str, Any]]],
) -> list[Problem]:
    problems: list[Problem] = []
    for schema in remote.sync_schema:
        if schema.name not in source or schema.name not in target:
            continue
        try:
            source_pk = primary_key(source[schema.name], schema.name, remote.source_conn_id)
        except SchemaMismatch as exc:
            problems.append(Problem(f"source {remote.source_conn_id}", str(exc), "give the collection a primary key"))
            continue
        for conn_id, side, pk in ((remote.source_conn_id, source, None), (remote.remote_conn_id, target, source_pk)):
            for text in schema_problems(schema, conn_id, side[schema.name], pk):
                problems.append(Problem(conn_id, text, _schema_fix(text)))
        for name in schema.fields:
            a, b = source[schema.name].get(name), target[schema.name].get(name)
            if a and b and a.get("type") != b.get("type"):
                problems.append(Problem(
                    remote.remote_conn_id,
                    f"field {schema.name}.{name} is {a.get('type')} on the source but {b.get('type')} here",
                    "give the field the same type on both instances"))
    return problems


def instance_facts(remote: RemoteSource) -> list[str]:
    """What the sync adapts to on each instance: its page-size cap and how far back it shows activity."""
    facts = []
    for role, conn_id in (("source", remote.source_conn_id), ("remote", remote.remote_conn_id)):
        hook = DirectusHook(conn_id, timeout=15, retries=1)
        try:
            cap = hook.page_size_cap
            oldest = hook.oldest_activity() if role == "source" else None
        except Exception as exc:  # the problems list already says why the instance cannot be used
            log.debug("No facts about %s: %s", conn_id, exc)
            continue
        facts.append(f"{role} {conn_id}: " + (f"reads at most {cap} rows per request (QUERY_LIMIT_MAX); the sync "
                                              "reads in pages of that size" if cap is not None
                                              else "no limit on rows per request"))
        if oldest is not None:
            facts.append(f"{role} {conn_id}: shows activity back to {oldest[1]} (id {oldest[0]}); a run whose "
                         "window starts earlier compares every item instead")
    return facts


def _schema_fix(problem: str) -> str:
    """What to do about one of ``schema_problems``' messages."""
    if " is missing on " in problem:
        return "add the field on that instance or remove it from the schema"
    if "primary key" in problem:
        return "give the collection the same primary key on both instances"
    return "remove the field from the schema"
