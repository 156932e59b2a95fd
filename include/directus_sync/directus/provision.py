"""Provision an instance for syncing: the "Data Sync" policy, its permissions, and an API-only user.

This replaces the original extension's manual setup steps. It runs with an admin token and is
idempotent: running it again sets the policy's permissions to what the sync needs and keeps the user.

The policy asks only for what the sync uses (see :func:`grants_for`): the synced collections limited to
their primary key and listed fields, the activity of the synced collections limited to the fields the
sync reads, the schema reads of those collections (fields, settings, relations), and notifications
limited to what the sync sends.
Directus's core licence (no licence key) refuses to store such filters and field limits, and ignores
any stored ones (``custom_permission_rules_enabled`` is off): there, provision grants whole collections
and says so (:data:`UNENFORCED_NOTE`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directus_sync.config import CollectionSchema
from directus_sync.directus.client import DirectusClient, segment
from directus_sync.directus.errors import DirectusError, refused_limit
from directus_sync.directus.relations import FILES, Relation, file_holders, parse_relations, with_aliases_expanded
from directus_sync.directus.schema import key_field, references_of

POLICY_NAME = "Data Sync"
USER_EMAIL = "directus-sync@example.com"
# The permissions the sync user needs on each synced collection (not the activity actions, see activity.py).
CRUD_ACTIONS = ("create", "read", "update", "delete")
# The activity fields the sync reads or filters on (activity.activity_filter, changes_filter, the cursor).
ACTIVITY_FIELDS = ("id", "action", "collection", "item", "timestamp", "user")
# What ``DirectusHook.notify`` sends.
NOTIFICATION_FIELDS = ("recipient", "subject", "message")
# ``/collections/{c}``: whether a collection's activity is tracked (meta.accountability).
COLLECTION_META_FIELDS = ("collection", "accountability")
# ``/fields/{c}`` needs only read access to directus_fields; the fields it lists are those the user may read.
FIELD_META_FIELDS = ("collection", "field")
# ``/relations`` asks only whether the user may read directus_relations at all: Directus reads the rows as the
# system (no permission filter or field limit applies) and shows the relations whose collections and fields the
# user may read (services/relations.js, filterForbidden). So the grant is whole: a filter would promise a limit
# Directus does not apply, and the synced collections' own grants already decide what is shown.
EVERY_FIELD = ("*",)
# What the sync reads or writes besides the synced collections.
SYSTEM_PERMISSIONS = (
    ("directus_activity", "read"),
    ("directus_collections", "read"),
    ("directus_fields", "read"),
    ("directus_relations", "read"),
    ("directus_notifications", "create"),
)
# What copying files takes, when a listed field references directus_files (see engine/files.py): reading rows
# and ``/assets`` on the source, creating and replacing them and their folders on the remote. One sync user
# serves an instance as source and as remote, so both sides are granted. Deleting only when pruning (below).
FILE_PERMISSIONS = (
    ("directus_files", "read"),
    ("directus_files", "create"),
    ("directus_files", "update"),
    ("directus_folders", "read"),
    ("directus_folders", "create"),
)
UNENFORCED_NOTE = ("this instance's licence does not enforce permission filters or field limits: the sync user "
                   "can read the activity of every collection, with IP addresses and user agents, and every "
                   "field of the synced collections")


class ProvisionError(RuntimeError):
    """The instance refused a provisioning call; the message says which and why."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Grant:
    """One permission of the sync policy: ``action`` on ``collection``, limited to ``fields`` and to the
    items ``filter`` selects (``None``: every item)."""

    collection: str
    action: str
    fields: tuple[str, ...] = EVERY_FIELD
    filter: dict[str, Any] | None = None

    @property
    def restricted(self) -> bool:
        """Whether Directus counts it as a custom permission rule (a licence feature)."""
        return self.fields != EVERY_FIELD or bool(self.filter)

    def whole(self) -> Grant:
        """The same permission without field limit or filter, as the core licence allows."""
        return Grant(self.collection, self.action)

    def payload(self, policy_id: str) -> dict[str, Any]:
        return {"policy": policy_id, "collection": self.collection, "action": self.action,
                "fields": list(self.fields), "permissions": self.filter or {}, "validation": {}, "presets": None}

    def matches(self, stored: Mapping[str, Any]) -> bool:
        """Whether a permission as Directus stores it says exactly this."""
        return (tuple(stored.get("fields") or ()) == self.fields and (stored.get("permissions") or None) == self.filter
                and not stored.get("validation") and not stored.get("presets"))

    def describe(self) -> tuple[str, str, str, str]:
        """Collection, action, fields and filter, as printed."""
        fields = "every field" if self.fields == EVERY_FIELD else ", ".join(self.fields)
        return (self.collection, self.action, fields,
                json.dumps(self.filter, separators=(",", ":")) if self.filter else "every item")


# What pruning files takes (the row's ``prune_files``, see engine/files.py): deleting them, and reading every
# field that may hold one (:func:`file_reference_reads`: Directus's own and every collection's, which
# ``/relations`` hides from a user who may not read them), so that a file in use is never taken for unreferenced.
PRUNE_PERMISSIONS = (("directus_files", "delete"), ("directus_users", "read"), ("directus_settings", "read"))


@dataclass(frozen=True)
class SyncUser:
    """The sync user's id and static token on one instance, and what its policy grants."""

    url: str
    user_id: str
    token: str
    email: str = USER_EMAIL
    grants: tuple[Grant, ...] = ()
    rules_enforced: bool = True

    def connection(self) -> dict[str, str]:
        """The Airflow connection for this instance, in the JSON form of ``AIRFLOW_CONN_<ID>``."""
        return {"conn_type": "http", "host": self.url, "password": self.token}


def with_key(pk: str, fields: Sequence[str]) -> tuple[str, ...]:
    """The primary key and the listed fields, each once, key first."""
    return (pk, *dict.fromkeys(f for f in fields if f != pk))


def grants_for(collections: Mapping[str, Sequence[str] | None], files: bool = False, prune_files: bool = False,
               reference_reads: Mapping[str, tuple[str, ...]] | None = None) -> list[Grant]:
    """The permissions the sync needs for ``collections`` (name -> the fields it may touch, primary key
    included, or ``None`` for every field), in the order they are printed; with ``files`` (a listed field
    references ``directus_files``), what copying files takes too, and with ``prune_files`` what pruning them
    takes: deleting files and reading ``reference_reads`` (collection -> its key and the fields that may hold a
    file; a synced collection's read grant gains them, any other collection gets a read grant of its own)."""
    names = sorted(collections)
    synced = {"collection": {"_in": names}}
    reads = dict(reference_reads or {}) if files and prune_files else {}

    def fields_of(name: str, action: str) -> tuple[str, ...]:
        granted = tuple(collections[name] or EVERY_FIELD)
        if action != "read" or name not in reads or granted == EVERY_FIELD:
            return granted
        return granted + tuple(f for f in reads[name] if f not in granted)

    grants = [Grant(name, action, fields_of(name, action)) for name in names for action in CRUD_ACTIONS]
    grants += [
        Grant("directus_activity", "read", ACTIVITY_FIELDS, synced),
        Grant("directus_collections", "read", COLLECTION_META_FIELDS, synced),
        Grant("directus_fields", "read", FIELD_META_FIELDS, synced),
        Grant("directus_relations", "read"),
        Grant("directus_notifications", "create", NOTIFICATION_FIELDS),
    ]
    if files:
        grants += [Grant(collection, action) for collection, action in FILE_PERMISSIONS]
    if files and prune_files:
        grants.append(Grant(FILES, "delete"))
        grants += [Grant(name, "read", fields) for name, fields in sorted(reads.items()) if name not in collections]
    return grants


def file_reference_reads(relations: Iterable[Relation], key_of: Callable[[str], str]) -> dict[str, tuple[str, ...]]:
    """Per collection holding a field that may hold a file (as the admin's ``relations`` show them: every one,
    Directus's own included), its key (``key_of``) and those fields (a many-to-any's with its kind field)."""
    reads: dict[str, tuple[str, ...]] = {}
    for holder in file_holders(relations):
        fields = (holder.field, *((holder.kind_field,) if holder.kind_field else ()))
        known = reads.get(holder.collection) or (key_of(holder.collection),)
        reads[holder.collection] = known + tuple(f for f in fields if f not in known)
    return reads


def provision(
    url: str,
    admin_token: str,
    collections: Sequence[str] | Mapping[str, Sequence[str] | None],
    token: str | None = None,
    email: str = USER_EMAIL,
    prune_files: bool = False,
) -> SyncUser:
    """Create or update the sync policy, permissions and user on the instance at ``url``.

    ``collections`` are the synced collections, or a mapping of each to its listed fields (the sync's
    schema; the primary key is added), where ``None`` grants every field of that collection. Collections
    the policy already covers keep their permissions, so several remotes can share one sync user.
    ``prune_files`` (a remote's row asks to prune files) adds what deleting unreferenced files takes.
    """
    url = url.rstrip("/")
    api = _AdminApi(url, admin_token)
    wanted = dict.fromkeys(collections) if not isinstance(collections, Mapping) else dict(collections)
    fields_of = _fields_reader(api)
    wanted = _aliases_expanded(api, wanted, fields_of)
    policy_id = _ensure_policy(api)
    enforced = _rules_enforced(api)
    fields = {name: None if listed is None else with_key(_primary_key(fields_of, name, api.url), listed)
              for name, listed in wanted.items()}
    files = _references_files(fields_of, fields)

    def reads_of() -> dict[str, tuple[str, ...]]:
        relations = parse_relations(api.call("GET", "/relations") or [])
        return file_reference_reads(relations, lambda name: _primary_key(fields_of, name, api.url))

    try:
        grants = _set_permissions(api, policy_id, fields, enforced, files, prune_files, reads_of)
    except _Restricted:
        enforced = False
        grants = _set_permissions(api, policy_id, fields, enforced, files, prune_files, reads_of)
    user = _ensure_user(api, policy_id, token, email)
    return SyncUser(url, user["id"], user["token"], email, tuple(grants), enforced)


FieldsOf = Callable[[str], dict[str, dict[str, Any]]]


def _fields_reader(api: _AdminApi) -> FieldsOf:
    """The admin's ``/fields`` of a collection, by field name, each collection read once: aliases, keys and
    file fields are all looked up in them."""
    known: dict[str, dict[str, dict[str, Any]]] = {}

    def fields_of(collection: str) -> dict[str, dict[str, Any]]:
        if collection not in known:
            try:
                found = api.call("GET", f"/fields/{segment(collection)}") or []
            except ProvisionError as exc:
                if exc.status in (403, 404):
                    raise ProvisionError(f"collection {collection!r} does not exist on {api.url}: create it "
                                         "before provisioning its fields") from None
                raise
            known[collection] = {f["field"]: f for f in found}
        return known[collection]

    return fields_of


def _aliases_expanded(api: _AdminApi, wanted: dict[str, Sequence[str] | None], fields_of: FieldsOf
                      ) -> dict[str, Sequence[str] | None]:
    """The collections and fields to grant, listed aliases replaced by the collections behind them, as the
    runs sync them (see relations.with_aliases_expanded)."""
    listed = [CollectionSchema.model_construct(name=name, fields=tuple(fields)) for name, fields in wanted.items()
              if fields is not None]
    expanded = with_aliases_expanded(listed, fields_of, lambda: parse_relations(api.call("GET", "/relations") or []))
    return {**wanted, **{s.name: s.fields for s in expanded}}


def _references_files(fields_of: FieldsOf, wanted: Mapping[str, tuple[str, ...] | None]) -> bool:
    """Whether a field to sync is a file or image field: a foreign key to ``directus_files``."""
    for collection, listed in wanted.items():
        fields = fields_of(collection)
        schema = CollectionSchema.model_construct(name=collection, fields=tuple(listed or fields))
        if "directus_files" in dict(references_of(schema, fields)).values():
            return True
    return False


def _ensure_policy(api: _AdminApi) -> str:
    found = api.call("GET", "/policies", params={"filter": json.dumps({"name": {"_eq": POLICY_NAME}}),
                                                  "fields": "id,admin_access,app_access"})
    for policy in found or []:
        powers = [name for name, on in (("admin access", policy.get("admin_access")),
                                        ("app access", policy.get("app_access"))) if on]
        if powers:
            raise ProvisionError(
                f'the policy "{POLICY_NAME}" ({policy["id"]}) on {api.url} has {" and ".join(powers)}, which the sync '
                "user must not have: rename or delete that policy, or turn its admin and app access off, then run "
                "provision again")
    if found:
        return str(found[0]["id"])
    created = api.call("POST", "/policies", json={"name": POLICY_NAME, "icon": "sync", "app_access": False,
                                                  "admin_access": False,
                                                  "description": "Used by directus-sync"})
    return str(created["id"])


def _rules_enforced(api: _AdminApi) -> bool:
    """Whether the instance's licence enforces permission filters and field limits (``/license``, admins
    only; an instance without that endpoint is assumed to, and a refused permission corrects that)."""
    try:
        license_ = api.call("GET", "/license") or {}
    except ProvisionError as exc:
        if exc.status in (403, 404):
            return True
        raise
    entitlement = (license_.get("entitlements") or {}).get("custom_permission_rules_enabled")
    if isinstance(entitlement, dict):
        value = entitlement.get("override")
        return bool(entitlement.get("default") if value is None else value)
    return bool(entitlement) if entitlement is not None else True


def _primary_key(fields_of: FieldsOf, collection: str, url: str) -> str:
    if (name := key_field(fields_of(collection))) is not None:
        return name
    raise ProvisionError(f"collection {collection!r} on {url} has no primary key")


def _widened(granted: tuple[str, ...] | None, fields: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The fields of a grant that must now also cover ``fields``: never fewer than before, since one sync user
    serves every remote of the instance and another remote may read the fields this one does not list
    (``None`` is every field)."""
    if granted is None or fields is None:
        return None
    return granted + tuple(f for f in fields if f not in granted)


def _set_permissions(
    api: _AdminApi, policy_id: str, wanted: Mapping[str, tuple[str, ...] | None], enforced: bool, files: bool = False,
    prune_files: bool = False, reads_of: Callable[[], dict[str, tuple[str, ...]]] = dict,
) -> list[Grant]:
    """Make the policy's permissions exactly the grants for ``wanted`` plus the collections it already
    covers (which keep theirs); a collection already covered keeps its fields and gains ``wanted``'s.
    Return the grants; ``files`` adds what copying files takes, ``prune_files`` what pruning them takes."""
    existing = api.read_all("/permissions", {"filter": json.dumps({"policy": {"_eq": policy_id}}),
                                             "fields": "id,collection,action,fields,permissions,validation,presets",
                                             "sort": "id"})
    covered: dict[str, tuple[str, ...] | None] = {}
    # A synced collection's fields are its update grant's: its read grant may also hold fields pruning reads.
    for stored in existing:
        if not _is_system(stored["collection"]) and stored["action"] == "update":
            kept = tuple(stored.get("fields") or EVERY_FIELD)
            covered[stored["collection"]] = None if kept == EVERY_FIELD else kept
    for collection, fields in wanted.items():
        covered[collection] = _widened(covered.get(collection, ()), fields)
    # File permissions granted for another remote's collections stay: the policy serves every remote.
    files = files or any(stored["collection"] == "directus_files" for stored in existing)
    prune_files = prune_files or any((s["collection"], s["action"]) == ("directus_files", "delete") for s in existing)
    reads = reads_of() if files and prune_files else {}
    for stored in existing:  # a collection read for pruning alone keeps what it was granted
        name = stored["collection"]
        if stored["action"] == "read" and not _is_system(name) and name not in covered:
            granted = tuple(stored.get("fields") or EVERY_FIELD)
            reads[name] = granted if granted == EVERY_FIELD else granted + tuple(
                f for f in reads.get(name, ()) if f not in granted)
    grants = grants_for(covered, files, prune_files, reads)
    if not enforced:
        grants = [g.whole() for g in grants]
    kept_collections = set(covered) - set(wanted)
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for stored in existing:
        by_pair.setdefault((stored["collection"], stored["action"]), []).append(stored)
    obsolete: list[Any] = []
    for grant in grants:
        rows = by_pair.pop((grant.collection, grant.action), [])
        if grant.collection in kept_collections and rows and not (grant.action == "read" and grant.collection in reads):
            continue  # another remote's collection: left as it is (but read for pruning)
        if rows and grant.matches(rows[0]):
            obsolete += [r["id"] for r in rows[1:]]
        elif rows:
            api.change("PATCH", f"/permissions/{rows[0]['id']}", grant.payload(policy_id))
            obsolete += [r["id"] for r in rows[1:]]
        else:
            api.change("POST", "/permissions", grant.payload(policy_id))
    for (collection, _), rows in by_pair.items():
        if _is_system(collection) or collection in wanted:
            obsolete += [r["id"] for r in rows]  # what an earlier version granted, or a duplicate
    if obsolete:
        api.call("DELETE", "/permissions", json=obsolete)
    return grants


def _is_system(collection: str) -> bool:
    return collection.startswith("directus_")


def _ensure_user(api: _AdminApi, policy_id: str, token: str | None, email: str) -> dict[str, Any]:
    """Create the user, or give the existing one ``token``; Directus never reads a token back, so
    without ``token`` an existing user's token is rotated."""
    token = token or _new_token()
    found = api.call("GET", "/users", params={"filter": json.dumps({"email": {"_eq": email}}),
                                              "fields": "id"})
    if found:
        user_id = found[0]["id"]
        api.call("PATCH", f"/users/{user_id}", json={"token": token, "status": "active"}, params={"fields": "id"})
    else:
        user_id = api.call("POST", "/users", params={"fields": "id"}, json={
            "first_name": "Data", "last_name": "Sync", "email": email,
            "token": token, "status": "active", "provider": "default"})["id"]
    attached = api.call("GET", "/access", params={
        "filter": json.dumps({"_and": [{"user": {"_eq": user_id}}, {"policy": {"_eq": policy_id}}]}),
        "fields": "id"})
    if not attached:
        api.call("POST", "/access", json={"policy": policy_id, "user": user_id})
    return {"id": str(user_id), "token": token}


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class _Restricted(Exception):
    """The instance's licence refused a permission with a filter or field limit."""


def _refused(exc: DirectusError, url: str) -> ProvisionError:
    """The admin's own terminal: Directus's full messages and codes help fix the instance."""
    if exc.status is None:
        return ProvisionError(f"{url} is not reachable: {exc.reason}", None)
    codes = f" [{', '.join(exc.codes)}]" if exc.codes else ""
    return ProvisionError(f"{exc.request_method} {exc.path} on {url} failed ({exc.status}): {exc.reason}{codes}",
                          exc.status, exc.codes[0] if exc.codes else None)


class _AdminApi:
    """The admin's calls, through the same client as the sync's (retries, encoding, Directus's errors)."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url
        self.client = DirectusClient.connect(url, admin_token, timeout=30)

    def call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.request(method, path, params=params, payload=json)
        except DirectusError as exc:
            raise _refused(exc, self.url) from exc

    def change(self, method: str, path: str, payload: dict[str, Any]) -> None:
        """Write one permission; :class:`_Restricted` when the licence refuses its filter or field limit."""
        try:
            self.call(method, path, json=payload, params={"fields": "id"})
        except ProvisionError as exc:
            if exc.code == "RESOURCE_RESTRICTED":
                raise _Restricted(str(exc)) from exc
            raise

    def read_all(self, path: str, params: dict[str, Any], page_size: int = 100) -> list[dict[str, Any]]:
        """Every row of a read, in pages the instance accepts (``limit=-1`` is cut to its QUERY_LIMIT_MAX)."""
        rows: list[dict[str, Any]] = []
        while True:
            try:
                page = self.client.request("GET", path, params={**params, "limit": page_size,
                                                                "offset": len(rows)}) or []
            except DirectusError as exc:
                cap = refused_limit(exc)
                if cap is None or cap >= page_size:
                    raise _refused(exc, self.url) from exc
                page_size = cap
                continue
            rows += page
            if len(page) < page_size:
                return rows
