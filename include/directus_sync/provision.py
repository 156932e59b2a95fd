"""Provision an instance for syncing: the "Data Sync" policy, its permissions, and an API-only user.

This replaces the original extension's manual setup steps. It runs with an admin token and is
idempotent: running it again updates the policy's permissions and keeps the user and its token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from directus_sync.hook import LIMIT_REFUSED

POLICY_NAME = "Data Sync"
USER_EMAIL = "directus-sync@example.com"
ITEM_ACTIONS = ("create", "read", "update", "delete")
# What the sync reads or writes besides the synced collections.
SYSTEM_PERMISSIONS = (
    ("directus_activity", "read"),
    ("directus_collections", "read"),  # whether a collection's activity is tracked (meta.accountability)
    ("directus_fields", "read"),
    ("directus_notifications", "create"),
)


class ProvisionError(RuntimeError):
    """The instance refused a provisioning call; the message says which and why."""


@dataclass(frozen=True)
class SyncUser:
    """The sync user's id and static token on one instance."""

    url: str
    user_id: str
    token: str

    def connection(self) -> dict[str, str]:
        """The Airflow connection for this instance, in the JSON form of ``AIRFLOW_CONN_<ID>``."""
        return {"conn_type": "http", "host": self.url, "password": self.token}


def provision(url: str, admin_token: str, collections: Sequence[str], token: str | None = None) -> SyncUser:
    """Create or update the sync policy, permissions and user on the instance at ``url``."""
    api = _AdminApi(url.rstrip("/"), admin_token)
    policy_id = _ensure_policy(api)
    _ensure_permissions(api, policy_id, collections)
    user = _ensure_user(api, policy_id, token)
    return SyncUser(url.rstrip("/"), user["id"], user["token"])


def _ensure_policy(api: _AdminApi) -> str:
    found = api.call("GET", "/policies", params={"filter": json.dumps({"name": {"_eq": POLICY_NAME}}),
                                                  "fields": "id"})
    if found:
        return str(found[0]["id"])
    created = api.call("POST", "/policies", json={"name": POLICY_NAME, "icon": "sync", "app_access": False,
                                                  "admin_access": False,
                                                  "description": "Used by directus-sync"})
    return str(created["id"])


def _ensure_permissions(api: _AdminApi, policy_id: str, collections: Sequence[str]) -> None:
    wanted = {(c, a) for c in collections for a in ITEM_ACTIONS} | set(SYSTEM_PERMISSIONS)
    existing = api.read_all("/permissions", {"filter": json.dumps({"policy": {"_eq": policy_id}}),
                                             "fields": "id,collection,action", "sort": "id"})
    have = {(p["collection"], p["action"]) for p in existing}
    missing = sorted(wanted - have)
    if missing:
        api.call("POST", "/permissions", json=[
            {"policy": policy_id, "collection": c, "action": a, "fields": ["*"], "permissions": {},
             "validation": {}} for c, a in missing])


def _ensure_user(api: _AdminApi, policy_id: str, token: str | None) -> dict[str, Any]:
    """Create the user, or give the existing one ``token``; Directus never reads a token back, so
    without ``token`` an existing user's token is rotated."""
    token = token or _new_token()
    found = api.call("GET", "/users", params={"filter": json.dumps({"email": {"_eq": USER_EMAIL}}),
                                              "fields": "id"})
    if found:
        user_id = found[0]["id"]
        api.call("PATCH", f"/users/{user_id}", json={"token": token, "status": "active"}, params={"fields": "id"})
    else:
        user_id = api.call("POST", "/users", params={"fields": "id"}, json={
            "first_name": "Data", "last_name": "Sync", "email": USER_EMAIL,
            "token": token, "status": "active", "provider": "default"})["id"]
    attached = api.call("GET", "/access", params={
        "filter": json.dumps({"_and": [{"user": {"_eq": user_id}}, {"policy": {"_eq": policy_id}}]}),
        "fields": "id"})
    if not attached:
        api.call("POST", "/access", json={"policy": policy_id, "user": user_id})
    return {"id": str(user_id), "token": token}


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class _AdminApi:
    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.url + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise ProvisionError(f"{self.url} is not reachable: {exc}") from exc
        if response.status_code >= 400:
            raise ProvisionError(f"{method} {path} on {self.url} failed ({response.status_code}): "
                                 f"{response.text[:500]}")
        return response.json().get("data") if response.content else None

    def read_all(self, path: str, params: dict[str, Any], page_size: int = 100) -> list[dict[str, Any]]:
        """Every row of a read, in pages the instance accepts (``limit=-1`` is cut to its QUERY_LIMIT_MAX)."""
        rows: list[dict[str, Any]] = []
        while True:
            try:
                page = self.call("GET", path, params={**params, "limit": page_size, "offset": len(rows)}) or []
            except ProvisionError as exc:
                cap = LIMIT_REFUSED.search(str(exc))
                if cap is None or int(cap.group(1)) >= page_size:
                    raise
                page_size = int(cap.group(1))
                continue
            rows += page
            if len(page) < page_size:
                return rows
