"""DirectusHook: one Airflow connection to one Directus instance, and the REST calls the sync needs.

The connection is an ``http`` connection whose host is the instance URL and whose password is the static
token of the instance's sync user. The token is sent as a Bearer header (``HttpHook`` would only do basic
auth with a login) and Airflow masks it in logs because it is the connection's password.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any

from airflow.providers.http.hooks.http import HttpHook
from requests import Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

# Transient answers worth another try; 4xx other than 429 are about the request and never retried.
RETRY_STATUSES = (429, 502, 503, 504)
DEFAULT_TIMEOUT = 60.0
# Directus's IN filter travels in the query string; keep URLs well under common 8 KB limits.
MAX_FILTER_CHARS = 6_000


class DirectusError(RuntimeError):
    """Directus refused a call or could not be reached; the message names instance, call and reason."""

    def __init__(self, conn_id: str, method: str, path: str, status: int | None, reason: str) -> None:
        self.conn_id = conn_id
        self.request_method = method
        self.path = path
        self.status = status
        where = f"Directus connection {conn_id!r}: {method} {path}"
        super().__init__(f"{where} failed ({status}): {reason}" if status else f"{where} failed: {reason}")


class DirectusHook(HttpHook):
    """Talks to one Directus instance through the REST API, reusing one HTTP session.

    :param directus_conn_id: the Airflow connection of the instance.
    :param timeout: seconds to wait for one response.
    :param retries: attempts after the first for connection errors and 429/502/503/504 answers, with
        exponential backoff and ``Retry-After`` honoured.
    """

    conn_name_attr = "directus_conn_id"
    default_conn_name = "directus_default"
    hook_name = "Directus"

    def __init__(
        self,
        directus_conn_id: str = default_conn_name,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 5,
        backoff_factor: float = 0.5,
        pool_size: int = 8,
    ) -> None:
        retry = Retry(
            total=retries,
            backoff_factor=backoff_factor,
            backoff_jitter=0.25,
            backoff_max=30,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # our writes are idempotent, so every verb may be retried
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        super().__init__(method="GET", http_conn_id=directus_conn_id, adapter=adapter)
        self.directus_conn_id = directus_conn_id
        self.timeout = timeout

    @cached_property
    def session(self) -> Session:
        connection = self.get_connection(self.directus_conn_id)
        if not connection.host:
            raise DirectusError(self.directus_conn_id, "GET", "/", None,
                                "the connection has no host; set it to the instance URL")
        if not connection.password:
            raise DirectusError(self.directus_conn_id, "GET", "/", None,
                                "the connection has no password; set it to the sync user's static token")
        session = self.get_conn()
        session.auth = None
        session.headers["Authorization"] = f"Bearer {connection.password}"
        return session

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        payload: Any = None,
        allow_statuses: Sequence[int] = (),
    ) -> Any:
        """Send one call and return Directus's ``data`` member (``None`` for empty answers)."""
        session = self.session
        body = None if payload is None else encode_json(payload)
        headers = {"Content-Type": "application/json; charset=utf-8"} if body is not None else None
        try:
            response = session.request(method, self.base_url.rstrip("/") + path, params=params, data=body,
                                       headers=headers, timeout=self.timeout)
        except RequestException as exc:
            raise DirectusError(self.directus_conn_id, method, path, None, _short(exc)) from exc
        if response.status_code >= 400 and response.status_code not in allow_statuses:
            raise DirectusError(self.directus_conn_id, method, path, response.status_code, _reason(response))
        if not response.content or response.status_code >= 400:
            return None
        return response.json().get("data")

    # -- who and what -------------------------------------------------------------------------------

    def current_user_id(self) -> str:
        """The id of the user whose token this connection holds (the sync user)."""
        me = self.request("GET", "/users/me", params={"fields": "id"})
        return str(me["id"])

    def fields(self, collection: str) -> list[dict[str, Any]]:
        """The fields of ``collection`` as ``/fields/{collection}`` returns them."""
        return list(self.request("GET", f"/fields/{collection}") or [])

    def activity_tracked(self, collection: str) -> bool:
        """Whether Directus logs activity for ``collection``: not when its ``meta.accountability`` is null.

        A table Directus holds no meta for is tracked, as Directus itself treats it ("all").
        """
        found = self.request("GET", f"/collections/{collection}") or {}
        meta = found.get("meta")
        return meta is None or meta.get("accountability") is not None

    # -- activity -----------------------------------------------------------------------------------

    def activity_page(
        self,
        collections: Sequence[str],
        after_id: int,
        start: str,
        end: str,
        exclude_user: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """One page of create/update/delete activity on ``collections`` in ``[start, end)``, by id."""
        params: dict[str, Any] = {
            "filter": json.dumps(activity_filter(collections, after_id, start, end, exclude_user)),
            "sort": "id",
            "limit": limit,
            "fields": "id,action,collection,item,timestamp,user",
        }
        return list(self.request("GET", "/activity", params=params) or [])

    def latest_changes(
        self, collection: str, keys: Sequence[Any], exclude_user: str | None, since: str | None = None
    ) -> dict[str, str]:
        """The timestamp of the latest create/update/delete of each key not made by ``exclude_user``,
        among those at or after ``since``."""
        latest: dict[str, str] = {}
        for chunk in chunk_keys([str(k) for k in keys]):
            params = {"filter": json.dumps(changes_filter(collection, exclude_user, since, list(chunk))),
                      "aggregate[max]": "timestamp", "groupBy[]": "item", "limit": -1}
            for row in self.request("GET", "/activity", params=params) or []:
                latest[str(row["item"])] = str(row["max"]["timestamp"])
        return latest

    def changed_since(self, collection: str, exclude_user: str | None, since: str) -> bool:
        """Whether anyone but ``exclude_user`` created, updated or deleted an item of ``collection`` at or
        after ``since`` (one request, whatever the number of keys)."""
        params = {"filter": json.dumps(changes_filter(collection, exclude_user, since)), "fields": "id", "limit": 1}
        return bool(self.request("GET", "/activity", params=params))

    # -- items --------------------------------------------------------------------------------------

    def read_items(self, collection: str, pk: str, keys: Sequence[Any], fields: Sequence[str]) -> list[dict]:
        """The current state of the items with ``keys`` (missing keys are simply absent)."""
        items: list[dict[str, Any]] = []
        for chunk in chunk_keys(keys):
            params = {"filter": json.dumps({pk: {"_in": list(chunk)}}), "fields": ",".join(fields),
                      "limit": -1}
            items.extend(self.request("GET", f"/items/{collection}", params=params) or [])
        return items

    def iter_items(
        self, collection: str, pk: str, fields: Sequence[str], page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Every item of ``collection``, page by page, with a keyset on the primary key."""
        last: Any = None
        while True:
            params: dict[str, Any] = {"fields": ",".join(fields), "sort": pk, "limit": page_size}
            if last is not None:
                params["filter"] = json.dumps({pk: {"_gt": last}})
            page = list(self.request("GET", f"/items/{collection}", params=params) or [])
            if page:
                yield page
            if len(page) < page_size:
                return
            last = page[-1][pk]

    def has_items(self, collection: str, pk: str) -> bool:
        """Whether ``collection`` holds any item."""
        return bool(self.request("GET", f"/items/{collection}", params={"fields": pk, "limit": 1}))

    def create_items(self, collection: str, pk: str, items: Sequence[dict[str, Any]]) -> None:
        self.request("POST", f"/items/{collection}", params={"fields": pk}, payload=list(items))

    def update_items(self, collection: str, pk: str, items: Sequence[dict[str, Any]]) -> None:
        self.request("PATCH", f"/items/{collection}", params={"fields": pk}, payload=list(items))

    def delete_items(self, collection: str, keys: Sequence[Any]) -> None:
        self.request("DELETE", f"/items/{collection}", payload=list(keys))

    # -- notifications ------------------------------------------------------------------------------

    def notify(self, recipients: Iterable[str], subject: str, message: str) -> None:
        """Create one in-app notification per recipient (and an e-mail where they enabled that)."""
        payload = [{"recipient": r, "subject": subject, "message": message} for r in recipients]
        if payload:
            self.request("POST", "/notifications", payload=payload)


def activity_filter(
    collections: Sequence[str], after_id: int, start: str, end: str, exclude_user: str | None
) -> dict[str, Any]:
    """The ``/activity`` filter for item changes; activity without a user (flows, scripts) is kept."""
    clauses: list[dict[str, Any]] = [
        {"collection": {"_in": list(collections)}},
        {"action": {"_in": ["create", "update", "delete"]}},
        {"id": {"_gt": after_id}},
        {"timestamp": {"_gte": start}},
        {"timestamp": {"_lt": end}},
    ]
    if exclude_user:
        # _neq alone would also drop rows whose user is NULL (SQL three-valued logic).
        clauses.append({"_or": [{"user": {"_neq": exclude_user}}, {"user": {"_null": True}}]})
    return {"_and": clauses}


def changes_filter(
    collection: str, exclude_user: str | None, since: str | None, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``/activity`` filter for item changes of ``collection`` (of ``keys``, when given) not made by
    ``exclude_user``, at or after ``since``."""
    clauses: list[dict[str, Any]] = [
        {"collection": {"_eq": collection}},
        {"action": {"_in": ["create", "update", "delete"]}},
    ]
    if keys is not None:
        clauses.append({"item": {"_in": list(keys)}})
    if exclude_user:
        clauses.append({"_or": [{"user": {"_neq": exclude_user}}, {"user": {"_null": True}}]})
    if since:
        clauses.append({"timestamp": {"_gte": since}})
    return {"_and": clauses}


def encode_json(payload: Any) -> bytes:
    """A request body exactly as sent: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def chunk_keys(keys: Sequence[Any], max_chars: int = MAX_FILTER_CHARS) -> Iterator[Sequence[Any]]:
    """Split ``keys`` so that each chunk's JSON stays under ``max_chars`` characters."""
    start, size = 0, 2
    for index, key in enumerate(keys):
        width = len(json.dumps(key)) + 2  # the key and its ", " separator
        if size + width > max_chars and index > start:
            yield keys[start:index]
            start, size = index, 2
        size += width
    if start < len(keys):
        yield keys[start:]


def _reason(response: Response) -> str:
    try:
        errors = response.json().get("errors") or []
        messages = [e.get("message", "") for e in errors if isinstance(e, dict)]
        if messages:
            return "; ".join(m for m in messages if m)[:2000]
    except ValueError:
        pass
    return (response.text or response.reason or "no details")[:500]


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "..."
