"""DirectusHook: one Airflow connection to one Directus instance, and the REST calls the sync needs.

The connection is an ``http`` connection whose host is the instance URL and whose password is the static
token of the instance's sync user. The token is sent as a Bearer header (``HttpHook`` would only do basic
auth with a login) and Airflow masks it in logs because it is the connection's password.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseHook
from requests import Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from directus_sync import config

log = logging.getLogger(__name__)

# Transient answers worth another try; 4xx other than 429 are about the request and never retried.
RETRY_STATUSES = (429, 502, 503, 504)
DEFAULT_TIMEOUT = 60.0
# The activity actions that change items.
ITEM_ACTIONS = ("create", "update", "delete")
# Directus's IN filter travels in the query string; keep URLs well under common 8 KB limits.
MAX_FILTER_CHARS = 6_000
# How Directus refuses a ``limit`` above its QUERY_LIMIT_MAX (utils/validate-query.js, a Joi message).
LIMIT_REFUSED = re.compile(r'\\?"limit\\?" must be less than or equal to (\d+)')
# The first read of a collection asks for this many items at most: their size is not known yet.
FIRST_PAGE_ITEMS = 16
# How much larger one read of a collection may be than the one before it.
PAGE_GROWTH = 4
# How Directus says its MAX_PAYLOAD_SIZE was exceeded (an INVALID_PAYLOAD 400, body-parser's words).
TOO_LARGE_REASON = "entity too large"
# How many pages an offset read steps back to find its previous page again before it reads on.
MAX_STEPS_BACK = 8
# The page-size cap learnt per connection id, for this process (None: the instance has none).
_PAGE_SIZE_CAPS: dict[str, int | None] = {}


class DirectusError(RuntimeError):
    """Directus refused a call or could not be reached.

    ``str(exc)`` is the safe form: instance, call, status and what identifies the problem (Directus's
    error codes, with the collection and field their extensions name), never a value Directus echoes
    from the item. It is what may leave the task log: XCom, the ledger, the dead-letter table,
    notifications and alerts. ``detail`` is the full text, Directus's messages included, for the task
    log only; ``codes`` are the error codes of the answer.

    :param reason: the full reason (Directus's messages as they came).
    :param safe: the reason's safe form; by default ``reason`` itself for errors without an answer (this
        package's own words) and the HTTP status phrase otherwise.
    """

    def __init__(self, conn_id: str, method: str, path: str, status: int | None, reason: str,
                 safe: str | None = None, codes: Sequence[str] = ()) -> None:
        self.conn_id = conn_id
        self.request_method = method
        self.path = path
        self.status = status
        self.codes = tuple(codes)
        if safe is None:
            safe = reason if status is None else status_phrase(status)
        self.safe_reason = safe
        where = f"Directus connection {conn_id!r}: {method} {path}"
        self.detail = f"{where} failed ({status}): {reason}" if status else f"{where} failed: {reason}"
        super().__init__(f"{where} failed ({status}): {safe}" if status else f"{where} failed: {safe}")

    @classmethod
    def from_response(cls, conn_id: str, method: str, path: str, response: Response) -> DirectusError:
        return cls.from_errors(conn_id, method, path, response.status_code, _errors_of(response),
                               reason=_reason(response))

    @classmethod
    def from_errors(cls, conn_id: str, method: str, path: str, status: int, errors: Sequence[Mapping[str, Any]],
                    reason: str | None = None) -> DirectusError:
        """The error of an answer whose body has these ``errors`` (Directus's ``errors`` member)."""
        safe, codes = summarize(status, errors)
        if reason is None:
            reason = "; ".join(str(e.get("message")) for e in errors if e.get("message")) or "no details"
        return cls(conn_id, method, path, status, reason, safe=safe, codes=codes)

    @property
    def too_large(self) -> bool:
        """Whether the remote (or a proxy) refused the request body as too large."""
        return self.status == 413 or (self.status == 400 and TOO_LARGE_REASON in self.detail.lower())


class PageTooLarge(Exception):
    """A read asked for more rows than the instance allows; ``cap`` is what it allows."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the instance reads at most {cap} rows per request")
        self.cap = cap


class PageSizer:
    """How many items the next read of one collection (and set of fields) asks for, so that the answer
    stays within ``budget`` bytes.

    An item's size is only known once it is read: the first read asks for :data:`FIRST_PAGE_ITEMS`, and
    each answer teaches the bytes per item (the body's length over its items). The next read then asks for
    as many items as the budget holds at the largest bytes per item seen, growing by at most
    :data:`PAGE_GROWTH` times from one read to the next, and shrinking at once. Thread-safe: read-ahead
    threads share it.
    """

    def __init__(self, budget: int, first: int = FIRST_PAGE_ITEMS) -> None:
        self.budget = budget
        self.per_item = 0  # the largest bytes per item seen, 0 before any
        self._size = max(1, first)
        self._lock = threading.Lock()

    def next(self, wanted: int) -> int:
        """Items to ask for when ``wanted`` are (at least one)."""
        return max(1, min(wanted, self._size))

    def measured(self, body_bytes: int, items: int) -> None:
        """Learn from an answer of ``body_bytes`` holding ``items`` items."""
        if items <= 0:
            return
        with self._lock:
            self.per_item = max(self.per_item, -(-body_bytes // items))
            self._size = max(1, min(self.budget // self.per_item, self._size * PAGE_GROWTH))


def sized_batches(keys: Sequence[Any], max_items: int, sizer: PageSizer) -> Iterator[list[Any]]:
    """``keys`` in batches of at most ``max_items``, each as large as ``sizer`` says when it is cut.

    Lazy: with reads running ahead, each batch is cut with what the reads done so far taught the sizer.
    """
    start = 0
    while start < len(keys):
        end = start + sizer.next(max_items)
        yield list(keys[start:end])
        start = end


@dataclass(frozen=True)
class Transport:
    """How to reach an instance, from its connection's extras, read as the HTTP provider's ``HttpHook`` reads
    them: ``verify`` (true, false, or a CA bundle's path), ``cert`` (a client certificate's path, or
    ``[cert, key]``), ``proxies`` (``{"https": "http://proxy:3128", ...}``, or ``proxy``).

    The sync hook's requests session and the trigger's aiohttp client both take their settings from here.
    """

    verify: bool | str = True
    cert: str | tuple[str, str] | None = None
    proxies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Transport:
        verify = extra.get("verify", extra.get("verify_ssl", True))
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
            verify = verify.strip().lower() == "true"
        cert = extra.get("cert")
        proxies = extra.get("proxies", extra.get("proxy")) or {}
        if isinstance(proxies, str):  # one proxy for every scheme
            proxies = {"http": proxies, "https": proxies}
        return cls(verify=verify, cert=tuple(cert) if isinstance(cert, list) else cert, proxies=dict(proxies))

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` needs for these settings: ``False`` skips verification."""
        if self.verify is False and self.cert is None:
            return False
        # As requests does: a verify left at true takes REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE from the
        # environment; a path may be a CA file or a folder of them.
        bundle = self.verify if isinstance(self.verify, str) else (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") if self.verify else None)
        context = ssl.create_default_context(cafile=bundle if bundle and not os.path.isdir(bundle) else None,
                                             capath=bundle if bundle and os.path.isdir(bundle) else None)
        if self.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            certfile, keyfile = self.cert if isinstance(self.cert, tuple) else (self.cert, None)
            context.load_cert_chain(certfile, keyfile)
        return context

    def proxy_for(self, url: str) -> str | None:
        """The proxy requests would use for ``url``: by scheme, then ``all``."""
        scheme = urlsplit(url).scheme
        return self.proxies.get(scheme) or self.proxies.get("all")


def base_url_of(host: str, schema: str | None, port: int | None) -> str:
    """The instance URL of an ``http`` connection, built as ``HttpHook`` builds it."""
    url = host if "://" in host else f"{schema or 'http'}://{host}"
    return f"{url}:{port}" if port else url


class DirectusAsyncClient:
    """The calls the event trigger makes, over aiohttp, for the triggerer's event loop.

    Not the HTTP provider's ``HttpAsyncHook``: it takes ``verify`` only as a boolean, ignores ``cert`` and
    hands ``proxies`` to aiohttp as one URL. The URL, token and :class:`Transport` come from the connection
    exactly as :class:`DirectusHook` reads them, so a connection that works for the tasks works here.
    """

    def __init__(self, conn_id: str, base_url: str, token: str, session: aiohttp.ClientSession,
                 transport: Transport | None = None) -> None:
        self.conn_id = conn_id
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"}
        self.transport = transport or Transport()
        self._ssl = self.transport.ssl_context()

    @classmethod
    async def connect(cls, conn_id: str, session: aiohttp.ClientSession) -> DirectusAsyncClient:
        """A client for the Airflow connection ``conn_id`` (host = URL, password = token)."""
        connection = await BaseHook.aget_connection(conn_id)
        if not connection.host or not connection.password:
            raise ValueError(f"connection {conn_id!r} needs the instance URL as host and the token as password")
        return cls(conn_id, base_url_of(connection.host, connection.schema, connection.port), connection.password,
                   session, Transport.from_extra(connection.extra_dejson))

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        url = self.base_url + path
        async with self.session.get(url, params=params, headers=self.headers, ssl=self._ssl,
                                    proxy=self.transport.proxy_for(url)) as response:
            if response.status >= 400:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                  message=(await response.text())[:300])
            return (await response.json()).get("data")

    async def current_user_id(self) -> str:
        me = await self.get("/users/me", {"fields": "id"})
        return str(me["id"])

    async def activity(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await self.get("/activity", params) or [])


class DirectusHook(HttpHook):
    """Talks to one Directus instance through the REST API, reusing one HTTP session.

    :param directus_conn_id: the Airflow connection of the instance.
    :param timeout: seconds to wait for one response.
    :param retries: attempts after the first for connection errors and 429/502/503/504 answers, with
        exponential backoff and ``Retry-After`` honoured.
    :param batch_bytes: the byte budget of one read of items (default: ``DIRECTUS_SYNC_BATCH_BYTES``).
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
        batch_bytes: int | None = None,
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
        self.batch_bytes = batch_bytes or config.batch_bytes()
        self._sizers: dict[tuple[str, tuple[str, ...]], PageSizer] = {}
        self._sizers_lock = threading.Lock()

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
        # The same reading of the extras as the trigger's client (DirectusAsyncClient): both behave alike.
        transport = Transport.from_extra(connection.extra_dejson)
        session.verify, session.cert, session.proxies = transport.verify, transport.cert, dict(transport.proxies)
        return session

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        payload: Any = None,
        allow_statuses: Sequence[int] = (),
        measured: Callable[[int], None] | None = None,
    ) -> Any:
        """Send one call and return Directus's ``data`` member (``None`` for empty answers).

        ``measured`` is called with the length of the answer's body, before it is parsed.
        """
        session = self.session
        body = None if payload is None else encode_json(payload)
        headers = {"Content-Type": "application/json; charset=utf-8"} if body is not None else None
        try:
            # The connection's TLS and proxy settings per request, as HttpHook.run_and_check passes them: left to
            # the session, requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the connection's CA bundle.
            response = session.request(method, self.base_url.rstrip("/") + path, params=params, data=body,
                                       headers=headers, timeout=self.timeout, verify=session.verify,
                                       cert=session.cert, proxies=session.proxies)
        except RequestException as exc:
            error = DirectusError(self.directus_conn_id, method, path, None, _short(exc),
                                  safe=f"{type(exc).__name__} (no answer from the instance)")
            log.warning("%s", error.detail)  # the full text stays in the task log
            raise error from exc
        if response.status_code >= 400 and response.status_code not in allow_statuses:
            error = DirectusError.from_response(self.directus_conn_id, method, path, response)
            log.warning("%s", error.detail)
            raise error
        if not response.content or response.status_code >= 400:
            return None
        if measured is not None:
            measured(len(response.content))
        return response.json().get("data")

    # -- who and what -------------------------------------------------------------------------------

    def current_user_id(self) -> str:
        """The id of the user whose token this connection holds (the sync user)."""
        me = self.request("GET", "/users/me", params={"fields": "id"})
        return str(me["id"])

    def fields(self, collection: str) -> list[dict[str, Any]]:
        """The fields of ``collection`` as ``/fields/{collection}`` returns them."""
        return list(self.request("GET", f"/fields/{segment(collection)}") or [])

    def activity_tracked(self, collection: str) -> bool:
        """Whether Directus logs activity for ``collection``: not when its ``meta.accountability`` is null.

        A table Directus holds no meta for is tracked, as Directus itself treats it ("all").
        """
        found = self.request("GET", f"/collections/{segment(collection)}") or {}
        meta = found.get("meta")
        return meta is None or meta.get("accountability") is not None

    # -- query limits -------------------------------------------------------------------------------

    @property
    def page_size_cap(self) -> int | None:
        """The largest ``limit`` the instance accepts (its ``QUERY_LIMIT_MAX``), ``None`` when unlimited.

        Asked once per connection and process (``/server/info`` tells signed-in users), and lowered when a
        read is refused for its limit: an explicit ``limit`` above the cap is a 400, while ``limit=-1`` is
        silently cut to it, so every read here sends an explicit limit no larger than this.
        """
        if self.directus_conn_id not in _PAGE_SIZE_CAPS:
            _PAGE_SIZE_CAPS[self.directus_conn_id] = self._advertised_cap()
        return _PAGE_SIZE_CAPS[self.directus_conn_id]

    def page_size(self, wanted: int) -> int:
        """``wanted`` rows, or the instance's cap when that is smaller."""
        cap = self.page_size_cap
        return wanted if cap is None else max(1, min(wanted, cap))

    def _advertised_cap(self) -> int | None:
        info = self.request("GET", "/server/info") or {}
        cap = (info.get("queryLimit") or {}).get("max")
        return int(cap) if isinstance(cap, int | float) and cap >= 0 else None

    def sizer(self, collection: str, fields: Sequence[str]) -> PageSizer:
        """The page sizer of reads of ``fields`` of ``collection`` through this hook (one per pair)."""
        with self._sizers_lock:
            return self._sizers.setdefault((collection, tuple(fields)), PageSizer(self.batch_bytes))

    def _limit(self, wanted: int, sizer: PageSizer | None, least: int = 1) -> int:
        """The ``limit`` of the next read: ``wanted`` rows, no more than the instance's cap and the sizer
        allow, and no fewer than ``least`` (within the cap)."""
        limit = self.page_size(wanted)
        return limit if sizer is None else min(limit, max(least, sizer.next(limit)))

    def _page(self, path: str, params: dict[str, Any], limit: int,
              sizer: PageSizer | None = None) -> list[dict[str, Any]]:
        """At most ``limit`` rows; :class:`PageTooLarge` when the instance's cap turns out to be smaller.

        The answer's size teaches ``sizer`` the bytes per row.
        """
        size = [0]
        try:
            rows = list(self.request("GET", path, params={**params, "limit": limit},
                                     measured=lambda n: size.__setitem__(0, n)) or [])
        except DirectusError as exc:
            cap = refused_limit(exc)
            if cap is None:
                raise
            if cap < 1 or limit <= cap:  # no page the instance accepts: asking again would loop for ever
                raise
            _PAGE_SIZE_CAPS[self.directus_conn_id] = cap
            log.warning("Directus connection %r accepts at most %d rows per read (QUERY_LIMIT_MAX); reading in "
                        "pages of that size", self.directus_conn_id, cap)
            raise PageTooLarge(cap) from exc
        if sizer is not None:
            sizer.measured(size[0], len(rows))
        return rows

    def _paged(self, path: str, params: dict[str, Any], wanted: int, sizer: PageSizer | None = None,
               least: int = 1) -> tuple[list[dict[str, Any]], int]:
        """One page of up to ``wanted`` rows (fewer when the instance caps pages or ``sizer`` says so), and
        the limit it was asked with: callers page on while a page is full."""
        while True:
            limit = self._limit(wanted, sizer, least)
            try:
                return self._page(path, params, limit, sizer), limit
            except PageTooLarge:
                continue

    def _read_keyed(
        self, path: str, keys: Sequence[Any], params_for: Callable[[list[Any]], dict[str, Any]],
        sizer: PageSizer | None = None,
    ) -> list[dict[str, Any]]:
        """Every row a filter on ``keys`` selects, asked in chunks no larger than a page (nor than ``sizer``
        says, each chunk cut after the previous answer).

        At most one row per key comes back, so a chunk asked with ``limit`` = its size is answered in full:
        a key missing from the answer is not on the instance.
        """
        rows: list[dict[str, Any]] = []
        start = 0
        while start < len(keys):
            end = next_chunk_end(keys, start, max_count=self._limit(len(keys) - start, sizer))
            chunk = list(keys[start:end])
            try:
                rows.extend(self._page(path, params_for(chunk), len(chunk), sizer))
            except PageTooLarge:
                continue  # cut again under the cap just learnt
            start = end
        return rows

    # -- activity -----------------------------------------------------------------------------------

    def activity_page(
        self,
        collections: Sequence[str],
        after_id: int,
        exclude_user: str | None,
        limit: int,
        window: tuple[str, str] | None = None,
        spans: Sequence[tuple[int, int]] = (),
    ) -> list[dict[str, Any]]:
        """One page, by id, of create/update/delete activity on ``collections`` in the time ``window``
        ``[start, end)`` or with an id in one of the inclusive ``spans``.

        The page holds at most ``limit`` rows, fewer when the instance caps pages: page on from the last id
        until a page comes back empty.
        """
        params: dict[str, Any] = {
            "filter": json.dumps(activity_filter(collections, after_id, exclude_user, window, spans)),
            "sort": "id",
            "fields": "id,action,collection,item,timestamp,user",
        }
        return self._paged("/activity", params, limit)[0]

    def activity_head(self) -> int:
        """The highest activity id the instance shows now (0 when it shows none)."""
        row = self._first_activity("-id", "id")
        return int(row["id"]) if row else 0

    def oldest_activity(self) -> tuple[int, str] | None:
        """The id and timestamp of the oldest activity row the instance shows (its retention horizon)."""
        row = self._first_activity("id", "id,timestamp")
        return (int(row["id"]), str(row["timestamp"])) if row else None

    def last_activity_before(self, timestamp: str) -> int:
        """The highest id of the activity rows stamped before ``timestamp`` (0 when none)."""
        row = self._first_activity("-id", "id", {"timestamp": {"_lt": timestamp}})
        return int(row["id"]) if row else 0

    def _first_activity(self, sort: str, fields: str, where: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The first activity row (of any kind) in ``sort`` order, among those ``where`` selects."""
        params = {"sort": sort, "fields": fields, "limit": 1, **({"filter": json.dumps(where)} if where else {})}
        rows = self.request("GET", "/activity", params=params) or []
        return rows[0] if rows else None

    def activity_count(self, low: int, high: int) -> int:
        """How many activity rows with an id in ``[low, high]`` the instance shows (of any kind)."""
        params = {"filter": json.dumps({"id": {"_between": [low, high]}}), "aggregate[count]": "id", "limit": 1}
        rows = self.request("GET", "/activity", params=params) or []
        return int(rows[0]["count"]["id"]) if rows else 0

    def latest_changes(
        self, collection: str, keys: Sequence[Any], exclude_user: str | None, since: str | None = None
    ) -> dict[str, str]:
        """The timestamp of the latest create/update/delete of each key not made by ``exclude_user``,
        among those at or after ``since``."""
        def params_for(chunk: list[Any]) -> dict[str, Any]:
            return {"filter": json.dumps(changes_filter(collection, exclude_user, since, chunk)),
                    "aggregate[max]": "timestamp", "groupBy[]": "item"}

        rows = self._read_keyed("/activity", [str(k) for k in keys], params_for)
        return {str(row["item"]): str(row["max"]["timestamp"]) for row in rows}

    def changed_since(self, collection: str, exclude_user: str | None, since: str) -> bool:
        """Whether anyone but ``exclude_user`` created, updated or deleted an item of ``collection`` at or
        after ``since`` (one request, whatever the number of keys)."""
        params = {"filter": json.dumps(changes_filter(collection, exclude_user, since)), "fields": "id", "limit": 1}
        return bool(self.request("GET", "/activity", params=params))

    # -- items --------------------------------------------------------------------------------------

    def read_items(self, collection: str, pk: str, keys: Sequence[Any], fields: Sequence[str]) -> list[dict]:
        """The current state of the items with ``keys``; a key absent from the answer is not on the instance."""
        def params_for(chunk: list[Any]) -> dict[str, Any]:
            return {"filter": json.dumps({pk: {"_in": chunk}}), "fields": ",".join(fields)}

        return self._read_keyed(f"/items/{segment(collection)}", keys, params_for, self.sizer(collection, fields))

    def iter_items(
        self, collection: str, pk: str, fields: Sequence[str], page_size: int, keyset: bool = True
    ) -> Iterator[list[dict[str, Any]]]:
        """Every item of ``collection``, page by page, sorted by the primary key.

        ``keyset`` pages with ``_gt`` on the key; Directus allows that on numeric keys only, so UUID and
        string keys are read by offset instead (see :meth:`_iter_by_offset`).
        """
        params: dict[str, Any] = {"fields": ",".join(fields), "sort": pk}
        path = f"/items/{segment(collection)}"
        sizer = self.sizer(collection, fields)
        if not keyset:
            yield from self._iter_by_offset(path, params, pk, page_size, sizer)
            return
        while True:
            page, limit = self._paged(path, params, page_size, sizer)
            if page:
                yield page
            if len(page) < limit:
                return
            params["filter"] = json.dumps({pk: {"_gt": page[-1][pk]}})

    def _iter_by_offset(
        self, path: str, params: dict[str, Any], pk: str, page_size: int, sizer: PageSizer | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row, sorted by ``pk``, in pages read by offset, each reaching back into the previous one.

        A row deleted meanwhile shifts the later rows towards the start, which would make an offset reader
        skip one. So every page starts a tenth of a page (at least one row) before the previous one ended,
        and must find a row of the previous page again; when it finds none, rows before it were deleted, and
        the reader steps back a page at a time until it does. Rows seen in the previous page are not yielded
        twice. Pages hold at least two rows, however large rows are, so that each has a row to reach back to
        and one to read on. No row is yielded twice in one listing, whatever happens between the reads.
        """
        offset, previous, seen, steps_back = 0, set[Any](), set[Any](), 0
        while True:
            page, size = self._paged(path, {**params, "offset": offset}, page_size, sizer, least=2)
            resume = max((i for i, row in enumerate(page) if row[pk] in previous), default=None)
            # Rows were deleted before this page: step back until a row of the previous page is found again.
            # A page of one row cannot overlap, and after MAX_STEPS_BACK pages rows were inserted before it
            # rather than deleted (rows inserted meanwhile are changes the activity log carries anyway).
            if (previous and resume is None and offset > 0 and size >= 2 and steps_back < MAX_STEPS_BACK):
                offset, steps_back = max(0, offset - size), steps_back + 1
                continue
            steps_back = 0
            fresh = [row for row in page[0 if resume is None else resume + 1:] if row[pk] not in seen]
            if fresh:
                seen.update(row[pk] for row in fresh)
                yield fresh
            if len(page) < size:
                return
            previous = {row[pk] for row in page}
            following = self._limit(page_size, sizer, least=2)  # the next page overlaps by a tenth of itself
            offset += len(page) - max(0, min(max(1, following // 10), following - 1, len(page) - 1))

    def has_items(self, collection: str, pk: str) -> bool:
        """Whether ``collection`` holds any item."""
        return bool(self.request("GET", f"/items/{segment(collection)}", params={"fields": pk, "limit": 1}))

    def create_items(self, collection: str, pk: str, items: Sequence[dict[str, Any]]) -> None:
        self.request("POST", f"/items/{segment(collection)}", params={"fields": pk}, payload=list(items))

    def update_items(self, collection: str, pk: str, items: Sequence[dict[str, Any]]) -> None:
        self.request("PATCH", f"/items/{segment(collection)}", params={"fields": pk}, payload=list(items))

    def delete_items(self, collection: str, keys: Sequence[Any]) -> None:
        self.request("DELETE", f"/items/{segment(collection)}", payload=list(keys))

    # -- notifications ------------------------------------------------------------------------------

    def notify(self, recipients: Iterable[str], subject: str, message: str) -> None:
        """Create one in-app notification per recipient (and an e-mail where they enabled that)."""
        payload = [{"recipient": r, "subject": subject, "message": message} for r in recipients]
        if payload:
            self.request("POST", "/notifications", payload=payload)


def activity_filter(
    collections: Sequence[str],
    after_id: int,
    exclude_user: str | None,
    window: tuple[str, str] | None = None,
    spans: Sequence[tuple[int, int]] = (),
) -> dict[str, Any]:
    """The ``/activity`` filter for item changes in a time window or id spans; activity without a user
    (flows, scripts) is kept."""
    where: list[dict[str, Any]] = [{"id": {"_between": [low, high]}} for low, high in spans]
    if window is not None:
        where.append({"_and": [{"timestamp": {"_gte": window[0]}}, {"timestamp": {"_lt": window[1]}}]})
    clauses: list[dict[str, Any]] = [
        {"collection": {"_in": list(collections)}},
        {"action": {"_in": list(ITEM_ACTIONS)}},
        {"id": {"_gt": after_id}},
        {"_or": where or [{"id": {"_null": True}}]},  # nothing to read: a clause no row matches
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
        {"action": {"_in": list(ITEM_ACTIONS)}},
    ]
    if keys is not None:
        clauses.append({"item": {"_in": list(keys)}})
    if exclude_user:
        clauses.append({"_or": [{"user": {"_neq": exclude_user}}, {"user": {"_null": True}}]})
    if since:
        clauses.append({"timestamp": {"_gte": since}})
    return {"_and": clauses}


def segment(name: str) -> str:
    """``name`` as one path segment: quoted, dots too, so that no name can reach another endpoint (``../users``)."""
    return quote(name, safe="").replace(".", "%2E")


def encode_json(payload: Any) -> bytes:
    """A request body exactly as sent: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def chunk_keys(
    keys: Sequence[Any], max_chars: int = MAX_FILTER_CHARS, max_count: int | None = None
) -> Iterator[Sequence[Any]]:
    """Split ``keys`` so that each chunk's JSON stays under ``max_chars`` characters and ``max_count`` keys."""
    start = 0
    while start < len(keys):
        end = next_chunk_end(keys, start, max_chars, max_count)
        yield keys[start:end]
        start = end


def next_chunk_end(
    keys: Sequence[Any], start: int, max_chars: int = MAX_FILTER_CHARS, max_count: int | None = None
) -> int:
    """Where the chunk of ``keys`` starting at ``start`` ends: its JSON under ``max_chars`` characters, at
    most ``max_count`` keys, and at least one key."""
    size, index = 2, start
    stop = len(keys) if max_count is None else min(len(keys), start + max(1, max_count))
    while index < stop:
        width = len(json.dumps(keys[index])) + 2  # the key and its ", " separator
        if size + width > max_chars and index > start:
            break
        size += width
        index += 1
    return index


def refused_limit(exc: DirectusError) -> int | None:
    """The instance's page-size cap, when ``exc`` is Directus refusing a read's ``limit``."""
    match = LIMIT_REFUSED.search(exc.detail) if exc.status == 400 else None
    return int(match.group(1)) if match else None


def _errors_of(response: Response) -> list[dict[str, Any]]:
    """The ``errors`` member of a Directus answer (empty when the body is not Directus's JSON)."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _reason(response: Response) -> str:
    """The full reason: Directus's messages, or the body. For the task log only (see :func:`summarize`)."""
    messages = [str(e.get("message") or "") for e in _errors_of(response)]
    if any(messages):
        return "; ".join(m for m in messages if m)[:2000]
    return (response.text or response.reason or "no details")[:500]


# -- the safe form of Directus's errors ------------------------------------------------------------
#
# Directus puts offending values in its messages ('Value "a@b.c" for field "email" in collection
# "people" has to be unique'). The safe form keeps what identifies the problem and nothing an item holds:
# the error code, and from the extensions only names (collection, field, constraint, rule type). Codes
# this package does not know keep the code and the HTTP status phrase; messages are never echoed.

# Codes whose extensions name the field and collection (@directus/errors, @directus/validation), and
# what is wrong with the field's value; the value itself, also in the extensions, is left out.
FIELD_PROBLEMS = {
    "RECORD_NOT_UNIQUE": "must be unique",
    "VALUE_TOO_LONG": "is too long",
    "VALUE_OUT_OF_RANGE": "is out of range",
    "NOT_NULL_VIOLATION": "can't be null",
    "CONTAINS_NULL_VALUES": "contains null values",
    "INVALID_FOREIGN_KEY": "is not a valid foreign key",
    "FAILED_VALIDATION": "fails validation",
}
# Codes whose meaning needs no detail: fixed words (Directus's messages for them carry free text or none).
FIXED_PROBLEMS = {
    "INVALID_CREDENTIALS": "invalid user credentials",
    "INVALID_TOKEN": "invalid token",
    "TOKEN_EXPIRED": "token expired",
    "USER_SUSPENDED": "user suspended",
    "FORBIDDEN": "no permission to access this",
    "INVALID_PAYLOAD": "invalid payload",
    "INVALID_QUERY": "invalid query",
    "ROUTE_NOT_FOUND": "no such route",
    "CONTENT_TOO_LARGE": "content too large",
    "UNPROCESSABLE_CONTENT": "can't process content",
    "REQUESTS_EXCEEDED": "too many requests",
    "SERVICE_UNAVAILABLE": "service unavailable",
    "INTERNAL_SERVER_ERROR": "an unexpected error occurred",
    "METHOD_NOT_ALLOWED": "method not allowed",
    "COLLECTION_INACTIVE": "collection inactive",
    "LIMIT_EXCEEDED": "limit exceeded",
    "OUT_OF_TIME": "timed out",
}
# What an error code and a schema name look like; anything else in their place is not shown.
CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}")
RULE = re.compile(r"[a-z_]{1,32}")
MAX_ERRORS_SHOWN = 5


def summarize(status: int, errors: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """The safe form of a Directus error answer and its error codes.

    ``RECORD_NOT_UNIQUE: field "email" in collection "people" must be unique``; an unknown code gives
    ``SOME_CODE (Bad Request)``, an answer without codes the status phrase.
    """
    summaries: list[str] = []
    codes: list[str] = []
    for error in errors:
        extensions = error.get("extensions")
        extensions = extensions if isinstance(extensions, Mapping) else {}
        code = _fits(CODE, extensions.get("code"))
        if code is None:
            continue
        codes.append(code)
        text = _error_summary(status, code, extensions, str(error.get("message") or ""))
        if text not in summaries:
            summaries.append(text)
    if not summaries:
        return status_phrase(status), tuple(codes)
    more = len(summaries) - MAX_ERRORS_SHOWN
    shown = "; ".join(summaries[:MAX_ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
    return shown, tuple(codes)


def _error_summary(status: int, code: str, extensions: Mapping[str, Any], message: str) -> str:
    if code in FIELD_PROBLEMS:
        field = _fits(NAME, extensions.get("field"))
        collection = _fits(NAME, extensions.get("collection"))
        subject = f'field "{field}"' if field else "a value"
        if collection:
            subject += f' in collection "{collection}"'
        text = f"{code}: {subject} {FIELD_PROBLEMS[code]}"
        constraint = _fits(NAME, extensions.get("constraint"))
        if code == "INVALID_FOREIGN_KEY" and constraint and not field:
            text += f' (constraint "{constraint}")'
        rule = _fits(RULE, extensions.get("type"))
        if code == "FAILED_VALIDATION" and rule:
            text += f' (rule "{rule}")'
        return text
    if code in FIXED_PROBLEMS:
        text = f"{code}: {FIXED_PROBLEMS[code]}"
        if code == "INVALID_PAYLOAD" and TOO_LARGE_REASON in message.lower():
            text += " (request entity too large)"
        if code == "INVALID_QUERY" and (cap := LIMIT_REFUSED.search(message)):
            text += f' ("limit" must be less than or equal to {int(cap.group(1))})'
        return text
    return f"{code} ({status_phrase(status)})"


def _fits(pattern: re.Pattern[str], value: Any) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def status_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status (never the server's own words)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "..."
