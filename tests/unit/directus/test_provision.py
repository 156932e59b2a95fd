"""The sync policy provision builds: least privilege from a schema, the core licence's fallback, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from directus_sync.directus import provision as prov
from directus_sync.directus.provision import (
    ACTIVITY_FIELDS,
    CRUD_ACTIONS,
    NOTIFICATION_FIELDS,
    SYSTEM_PERMISSIONS,
    Grant,
    ProvisionError,
    grants_for,
    with_key,
)
from directus_sync.directus.relations import SYSTEM_FILE_FIELDS


def test_grants_limit_each_synced_collection_to_its_key_and_listed_fields() -> None:
    grants = {(g.collection, g.action): g for g in grants_for({"articles": with_key("id", ["title", "id", "views"]),
                                                               "authors": None})}
    for action in ("create", "read", "update", "delete"):
        assert grants["articles", action].fields == ("id", "title", "views")
        assert grants["articles", action].filter is None
        assert grants["authors", action].fields == ("*",)  # no field list given: every field, and printed so
    activity = grants["directus_activity", "read"]
    assert activity.fields == ACTIVITY_FIELDS == ("id", "action", "collection", "item", "timestamp", "user")
    assert activity.filter == {"collection": {"_in": ["articles", "authors"]}}
    assert grants["directus_collections", "read"].filter == activity.filter
    assert grants["directus_fields", "read"].filter == activity.filter
    assert grants["directus_relations", "read"] == Grant("directus_relations", "read")  # Directus filters /relations
    notifications = grants["directus_notifications", "create"]
    assert notifications.fields == NOTIFICATION_FIELDS == ("recipient", "subject", "message")
    assert set(grants) == {(c, a) for c in ("articles", "authors") for a in ("create", "read", "update", "delete")} | {
        ("directus_activity", "read"), ("directus_collections", "read"), ("directus_fields", "read"),
        ("directus_relations", "read"), ("directus_notifications", "create")}
    assert "directus_users" not in {c for c, _ in grants}


def test_a_grant_as_directus_stores_it() -> None:
    grant = Grant("directus_activity", "read", ACTIVITY_FIELDS, {"collection": {"_in": ["a"]}})
    payload = grant.payload("p1")
    assert payload["fields"] == list(ACTIVITY_FIELDS) and payload["permissions"] == {"collection": {"_in": ["a"]}}
    assert grant.restricted and not grant.whole().restricted
    assert grant.matches({**payload, "validation": None})
    assert not grant.matches({**payload, "fields": ["*"]})
    assert Grant("a", "read").matches({"fields": ["*"], "permissions": None, "validation": None, "presets": None})
    assert grant.describe() == ("directus_activity", "read", "id, action, collection, item, timestamp, user",
                                '{"collection":{"_in":["a"]}}')


class FakeApi:
    """An instance's admin API: policies, permissions (refused with filters when unlicensed), users."""

    def __init__(self, licensed: bool = True, policy: dict[str, Any] | None = None) -> None:
        self.url = "http://cms"
        self.licensed = licensed
        self.policies = [policy] if policy else []
        self.permissions: dict[int, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        # What the admin's /relations shows: Directus's own file fields always.
        self.relations: list[dict[str, Any]] = [
            {"collection": c, "field": f, "related_collection": "directus_files", "meta": None}
            for c, f in SYSTEM_FILE_FIELDS]

    def call(self, method: str, path: str, json: Any = None, params: Any = None) -> Any:
        if path == "/license":
            return {"entitlements": {"custom_permission_rules_enabled": {"default": self.licensed}}}
        if path == "/policies":
            if method == "POST":
                self.policies.append({"id": "pol", **json})
                return {"id": "pol"}
            return self.policies
        if path.startswith("/fields/"):
            return [{"field": "id", "schema": {"is_primary_key": True}}, {"field": "title", "schema": {}}]
        if path == "/permissions" and method == "DELETE":
            self.writes.append((method, path))
            for key in json:
                del self.permissions[key]
            return None
        if path == "/users":
            return [] if method == "GET" else {"id": "user1"}
        if path == "/access":
            return []
        if path == "/relations":
            return self.relations
        return None

    def change(self, method: str, path: str, payload: dict[str, Any]) -> None:
        if not self.licensed and Grant(payload["collection"], payload["action"], tuple(payload["fields"]),
                                       payload["permissions"] or None).restricted:
            raise prov._Restricted("RESOURCE_RESTRICTED")
        self.writes.append((method, path))
        key = int(path.rsplit("/", 1)[1]) if method == "PATCH" else len(self.permissions) + 100
        self.permissions[key] = {"id": key, **payload}

    def read_all(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.permissions.values())


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(prov, "_AdminApi", lambda url, token: fake)
    return fake


def test_provision_stores_filters_and_field_lists_and_a_rerun_writes_nothing(api: FakeApi) -> None:
    user = prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t", email="sync@example.org")
    assert user.rules_enforced and user.email == "sync@example.org"
    stored = {(p["collection"], p["action"]): p for p in api.permissions.values()}
    assert stored["articles", "read"]["fields"] == ["id", "title"]
    assert stored["directus_activity", "read"]["permissions"] == {"collection": {"_in": ["articles"]}}
    assert stored["directus_activity", "read"]["fields"] == list(ACTIVITY_FIELDS)
    api.writes.clear()
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    assert api.writes == []


def test_a_second_collection_keeps_the_first_and_widens_the_activity_filter(api: FakeApi) -> None:
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    prov.provision("http://cms", "admin", ["authors"], token="t")
    stored = {(p["collection"], p["action"]): p for p in api.permissions.values()}
    assert stored["articles", "update"]["fields"] == ["id", "title"]
    assert stored["authors", "update"]["fields"] == ["*"]
    assert stored["directus_activity", "read"]["permissions"] == {"collection": {"_in": ["articles", "authors"]}}
    assert len(api.permissions) == 2 * len(CRUD_ACTIONS) + len(SYSTEM_PERMISSIONS)


def test_a_remote_listing_fewer_fields_never_narrows_what_another_remote_was_granted(api: FakeApi) -> None:
    """One sync user serves every remote of an instance: remote A syncs title and body, remote B only title."""
    prov.provision("http://cms", "admin", {"articles": ["title", "body"]}, token="t")
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    stored = {(p["collection"], p["action"]): p for p in api.permissions.values()}
    assert stored["articles", "read"]["fields"] == ["id", "title", "body"]
    prov.provision("http://cms", "admin", {"articles": ["summary"]}, token="t")
    stored = {(p["collection"], p["action"]): p for p in api.permissions.values()}
    assert stored["articles", "update"]["fields"] == ["id", "title", "body", "summary"]


def test_stale_system_permissions_are_removed(api: FakeApi) -> None:
    api.permissions[1] = {"id": 1, "collection": "directus_users", "action": "read", "fields": ["*"]}
    api.permissions[2] = {"id": 2, "collection": "directus_notifications", "action": "create", "fields": ["*"]}
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    assert 1 not in api.permissions
    assert api.permissions[2]["fields"] == list(NOTIFICATION_FIELDS)  # updated in place


def test_on_the_core_licence_provision_grants_whole_collections_and_says_so(api: FakeApi) -> None:
    api.licensed = False
    user = prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    assert not user.rules_enforced
    assert all(p["fields"] == ["*"] and not p["permissions"] for p in api.permissions.values())
    assert all(not g.restricted for g in user.grants)


def test_a_licence_that_refuses_filters_after_all_falls_back_to_whole_collections(
        api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    api.licensed = False
    monkeypatch.setattr(prov, "_rules_enforced", lambda _: True)  # e.g. no /license endpoint
    user = prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")
    assert not user.rules_enforced and len(api.permissions) == len(CRUD_ACTIONS) + len(SYSTEM_PERMISSIONS)


@pytest.mark.parametrize("powers", [{"app_access": True}, {"admin_access": True}])
def test_a_data_sync_policy_with_admin_or_app_access_is_refused(
        monkeypatch: pytest.MonkeyPatch, powers: dict[str, bool]) -> None:
    fake = FakeApi(policy={"id": "old", "admin_access": False, "app_access": False, **powers})
    monkeypatch.setattr(prov, "_AdminApi", lambda url, token: fake)
    with pytest.raises(ProvisionError, match=r'the policy "Data Sync" \(old\) on http://cms has (app|admin) access'):
        prov.provision("http://cms", "admin", ["articles"])
    assert fake.permissions == {}


def test_the_schema_option_is_read_like_the_tables_schema_column() -> None:
    from directus_sync.control import cli

    wanted, prune = cli._provision_schema(["tags"], json.dumps([{"name": "articles", "fields": ["title", "body"]},
                                                         {"collection": "authors", "fields": ["name"]}]), [], "db")
    assert (wanted, prune) == ({"articles": ["title", "body"], "authors": ["name"], "tags": None}, False)


def test_a_listed_file_field_grants_reading_and_writing_files_and_folders_and_keeps_them(
        api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are copied with their folders (engine/files.py); one sync user is source and remote at once."""
    image = {"field": "image", "schema": {"foreign_key_table": "directus_files"}}
    monkeypatch.setattr(api, "call", _with_fields(api.call, image))
    prov.provision("http://cms", "admin", {"articles": ["title", "image"]}, token="t")
    stored = {(p["collection"], p["action"]) for p in api.permissions.values()}
    assert set(prov.FILE_PERMISSIONS) <= stored
    assert ("directus_files", "delete") not in stored
    prov.provision("http://cms", "admin", {"authors": ["title"]}, token="t")  # another remote, no files
    assert set(prov.FILE_PERMISSIONS) <= {(p["collection"], p["action"]) for p in api.permissions.values()}


def test_pruning_files_grants_deleting_them_and_reading_directus_own_file_fields_and_keeps_them(
        api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruning must see every field that may hold a file (engine/files.py), Directus's own included."""
    image = {"field": "image", "schema": {"foreign_key_table": "directus_files"}}
    monkeypatch.setattr(api, "call", _with_fields(api.call, image))
    # File fields the sync user would not see otherwise: an unsynced collection's, an unlisted one of a synced
    # collection, a many-to-any allowing files.
    api.relations += [
        {"collection": "pages", "field": "hero", "related_collection": "directus_files", "meta": {}},
        {"collection": "articles", "field": "thumbnail", "related_collection": "directus_files", "meta": {}},
        {"collection": "pages_blocks", "field": "item", "related_collection": None,
         "meta": {"one_collection_field": "collection", "one_allowed_collections": ["directus_files", "text"]}}]
    prov.provision("http://cms", "admin", {"articles": ["title", "image"]}, token="t", prune_files=True)
    stored = {(p["collection"], p["action"]): p["fields"] for p in api.permissions.values()}
    assert stored[("directus_files", "delete")] == ["*"]
    assert stored[("directus_users", "read")] == ["id", "avatar"]
    assert "public_favicon" in stored[("directus_settings", "read")]
    assert stored[("pages", "read")] == ["id", "hero"] and ("pages", "update") not in stored  # read, nothing more
    assert stored[("pages_blocks", "read")] == ["id", "item", "collection"]
    assert stored[("articles", "read")] == ["id", "title", "image", "thumbnail"]
    assert stored[("articles", "update")] == ["id", "title", "image"]  # writes stay the listed fields
    before = dict(api.permissions)
    prov.provision("http://cms", "admin", {"authors": ["title"]}, token="t")  # another remote, no pruning asked
    after = {(p["collection"], p["action"]): p["fields"] for p in api.permissions.values()}
    assert ("directus_files", "delete") in after and after[("pages", "read")] == ["id", "hero"]
    assert ("pages", "update") not in after  # a collection read for pruning never becomes a synced one
    # Nothing granted before is narrowed (the activity, collections and fields filters only widen to authors).
    assert all(api.permissions[k] == v for k, v in before.items()
               if v["collection"] not in ("directus_activity", "directus_collections", "directus_fields"))


def test_pruning_without_a_file_field_grants_nothing_on_files(api: FakeApi) -> None:
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t", prune_files=True)
    assert not {p["collection"] for p in api.permissions.values()} & {"directus_files", "directus_users"}


def test_no_file_field_listed_grants_nothing_on_files(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    image = {"field": "image", "schema": {"foreign_key_table": "directus_files"}}
    monkeypatch.setattr(api, "call", _with_fields(api.call, image))
    prov.provision("http://cms", "admin", {"articles": ["title"]}, token="t")  # image not listed
    assert not {p["collection"] for p in api.permissions.values()} & {"directus_files", "directus_folders"}


def _with_fields(call: Any, *extra: dict[str, Any]) -> Any:
    def answer(method: str, path: str, json: Any = None, params: Any = None) -> Any:
        found = call(method, path, json, params)
        return [*found, *extra] if path.startswith("/fields/") else found
    return answer
