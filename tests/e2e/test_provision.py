"""provision against real Directus 12.4.0 (core licence): what it stores, what it refuses, what check says."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devtools.devserver import DevServerError, DirectusInstance
from directus_sync.directus.provision import ACTIVITY_FIELDS, POLICY_NAME, UNENFORCED_NOTE

from .harness import Airflow, conn_id, create_collection, items, run_cli, sync_token

cli = run_cli


def _policy(instance: DirectusInstance) -> dict:
    found = instance.api("GET", "/policies", params={"filter": json.dumps({"name": {"_eq": POLICY_NAME}}),
                                                      "fields": "id,admin_access,app_access"})
    assert len(found) == 1
    return dict(found[0])


def _stored(instance: DirectusInstance, policy_id: str) -> dict[tuple[str, str], list[dict]]:
    """The policy's permissions as Directus stores them, read as the admin."""
    rows = instance.api("GET", "/permissions", params={"filter": json.dumps({"policy": {"_eq": policy_id}}),
                                                       "limit": -1})
    stored: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        stored.setdefault((row["collection"], row["action"]), []).append(row)
    return stored


def test_provision_with_a_schema_grants_only_what_the_sync_uses_as_the_core_licence_allows(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        create_collection(instance, collection)
        result = cli(airflow, "provision", "--url", instance.url, "--token", sync_token(instance),
                     "--schema", json.dumps([{"name": collection, "fields": ["title", "views"]}]),
                     DIRECTUS_ADMIN_TOKEN=instance.admin_token)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The \"Data Sync\" policy grants" in result.stdout
        assert f"note: {UNENFORCED_NOTE}" in " ".join(result.stdout.split())
    policy = _policy(a)
    stored = _stored(a, policy["id"])
    # Every pair once, nothing beyond what the sync uses.
    assert all(len(rows) == 1 for rows in stored.values())
    # The policy serves every remote of the instance: the file grants are those of test_files' file fields
    # (one sync user per instance, and a later provision never narrows what an earlier one granted).
    system = {k for k in stored if k[0].startswith("directus_")}
    files = {("directus_files", "read"), ("directus_files", "create"), ("directus_files", "update"),
             ("directus_folders", "read"), ("directus_folders", "create")}
    assert system - files == {
        ("directus_activity", "read"), ("directus_collections", "read"), ("directus_fields", "read"),
        ("directus_relations", "read"), ("directus_notifications", "create")}
    assert {a_ for c, a_ in stored if c == collection} == {"create", "read", "update", "delete"}
    # The core licence: whole collections (filters and field limits are refused, see below).
    assert stored["directus_activity", "read"][0]["fields"] == ["*"]
    assert not stored["directus_activity", "read"][0]["permissions"]
    with pytest.raises(DevServerError, match=r"\(403\).*\[RESOURCE_RESTRICTED\]"):
        a.api("POST", "/permissions", json={"policy": policy["id"], "collection": "directus_activity",
                                           "action": "read", "fields": list(ACTIVITY_FIELDS),
                                           "permissions": {"collection": {"_in": [collection]}}})

    # check says what that means for both instances.
    name = f"prov_{collection}"
    airflow.add_remote(name=name, source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                       schema=[{"name": collection, "fields": ["title", "views"]}])
    checked = cli(airflow, "check", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    flat = " ".join(checked.stdout.split())
    assert f"note (source {conn_id(a)}): {UNENFORCED_NOTE}" in flat
    assert f"note (remote {conn_id(b)}): {UNENFORCED_NOTE}" in flat

    # And the sync runs with that user.
    a.api("POST", f"/items/{collection}", json=[{"title": "one", "views": 1, "internal_note": "stays"}])
    run = airflow.dags_test(f"directus_sync__{name}", datetime.now(UTC))
    assert run.returncode == 0 and "state=success" in run.stdout + run.stderr, (run.stdout + run.stderr)[-4000:]
    copied = items(b, collection)
    assert [(i["title"], i["views"], i["internal_note"]) for i in copied.values()] == [("one", 1, None)]


def test_provision_refuses_a_data_sync_policy_with_app_access_and_sets_the_users_email(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    c = instances["c"]
    create_collection(c, collection)
    policy = _policy(c)
    c.api("PATCH", f"/policies/{policy['id']}", json={"app_access": True})
    try:
        refused = cli(airflow, "provision", "--url", c.url, "--collection", collection, "--token", sync_token(c),
                      DIRECTUS_ADMIN_TOKEN=c.admin_token)
    finally:
        c.api("PATCH", f"/policies/{policy['id']}", json={"app_access": False})
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert f'the policy "Data Sync" ({policy["id"]}) on {c.url} has app access' in message
    assert "rename or delete that policy, or turn its admin and app access off" in message
    assert "Traceback" not in refused.stderr

    email = f"sync-{collection}@example.org"
    made = cli(airflow, "provision", "--url", c.url, "--collection", collection, "--email", email,
               "--token", f"other-{collection}", DIRECTUS_ADMIN_TOKEN=c.admin_token)
    assert made.returncode == 0, made.stdout + made.stderr
    me = c.api("GET", "/users/me", token=f"other-{collection}", params={"fields": "id"})
    user = c.api("GET", "/users", params={"filter": json.dumps({"email": {"_eq": email}}), "fields": "id"})
    assert me["id"] == user[0]["id"]
    c.api("DELETE", f"/users/{user[0]['id']}")
