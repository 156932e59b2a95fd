"""DirectusHook: one Airflow connection to one Directus instance, and the REST calls the sync needs.

The connection is an ``http`` connection whose host is the instance URL and whose password is the static
token of the instance's sync user. The token is sent as a Bearer header (``HttpHook`` would only do basic
auth with a login) and Airflow masks it in logs because it is the connection's password. Connection
reading, retries and error handling are shared with the async hook and the tools (:mod:`.client`);
this module holds the calls: activity, items, fields, relations, notifications, within the instance's limits.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow.providers.http.hooks.http import HttpHook

from directus_sync import config
from directus_sync.directus.activity import activity_filter, changes_filter
from directus_sync.directus.client import DEFAULT_TIMEOUT, DirectusClient, credentials_of, retry_adapter, segment
from directus_sync.directus.errors import DirectusError, refused_limit
from directus_sync.directus.paging import MAX_STEPS_BACK, PageSizer, PageTooLarge, next_chunk_end

log = logging.getLogger(__name__)

# The page-size cap learnt per connection id, for this process (None: the instance has none).
_PAGE_SIZE_CAPS: dict[str, int | None] = {}
# Directus's own collections that may hold a file, served at paths of their own rather than /items.
SYSTEM_PATHS = {"directus_users": "/users"}


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
        super().__init__(method="GET", http_conn_id=directus_conn_id,
                         adapter=retry_adapter(retries, backoff_factor, pool_size))
        self.directus_conn_id = directus_conn_id
        self.timeout = timeout
        self.batch_bytes = batch_bytes or config.batch_bytes()
        self._sizers: dict[tuple[str, tuple[str, ...]], PageSizer] = {}
        self._sizers_lock = threading.Lock()

    @cached_property
    def client(self) -> DirectusClient:
        """The calls' sender: ``HttpHook``'s session (with the retrying adapter), the token as Bearer, and the
        connection's TLS and proxy extras read as the async hook reads them."""
        connection = self.get_connection(self.directus_conn_id)
        credentials = credentials_of(self.directus_conn_id, connection.host, connection.schema, connection.port,
                                     connection.password, connection.extra_dejson)
        session = self.get_conn()
        session.auth = None
        session.headers["Authorization"] = f"Bearer {credentials.token}"
        return DirectusClient(self.directus_conn_id, credentials.base_url, session, credentials.transport,
                              self.timeout)

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
        """Send one call and return Directus's ``data`` member (see :meth:`DirectusClient.request`)."""
        return self.client.request(method, path, params=params, payload=payload, allow_statuses=allow_statuses,
                                   measured=measured)

    def current_user_id(self) -> str:
        """The id of the user whose token this connection holds (the sync user)."""
        me = self.request("GET", "/users/me", params={"fields": "id"})
        return str(me["id"])

    def fields(self, collection: str) -> list[dict[str, Any]]:
        """The fields of ``collection`` as ``/fields/{collection}`` returns them."""
        return list(self.request("GET", f"/fields/{segment(collection)}") or [])

    def relations(self) -> list[dict[str, Any]]:
        """Every relation the sync user may see, as ``/relations`` returns them (see :mod:`.relations`).

        One call answers in full: Directus reads the relations without a limit, whatever ``QUERY_LIMIT_MAX``.
        """
        return list(self.request("GET", "/relations") or [])

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
            answer = self.request("GET", path, params={**params, "limit": limit},
                                  measured=lambda n: size.__setitem__(0, n))
            # A singleton collection answers with its one item (or its defaults), an object rather than a list.
            rows = [answer] if isinstance(answer, dict) else list(answer or [])
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

    # -- files --------------------------------------------------------------------------------------

    def file_rows(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
        """The ``directus_files`` rows with ``ids``; an id absent from the answer is not on the instance."""
        def params_for(chunk: list[Any]) -> dict[str, Any]:
            return {"filter": json.dumps({"id": {"_in": chunk}}), "fields": ",".join(fields)}

        return self._read_keyed("/files", list(ids), params_for)

    def files_changed_since(self, since: str | None, page_size: int) -> Iterator[list[str]]:
        """The ids of the files uploaded (or replaced) or edited at or after ``since`` (every file when ``None``),
        page by page."""
        params: dict[str, Any] = {"fields": "id", "sort": "id"}
        if since is not None:
            params["filter"] = json.dumps({"_or": [{"uploaded_on": {"_gte": since}}, {"modified_on": {"_gte": since}}]})
        for page in self._iter_by_offset("/files", params, "id", page_size):
            yield [str(row["id"]) for row in page]

    def folder_rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The ``directus_folders`` rows with ``ids`` (id, name, parent); an id absent is not on the instance.

        Read one at a time: Directus 12.4 answers a non-admin's filtered ``GET /folders`` with a 500 (its
        FoldersService assigns to the frozen query), while ``GET /folders/{id}`` works (403: no such folder).
        """
        rows = (self.request("GET", f"/folders/{segment(str(i))}", params={"fields": "id,name,parent"},
                             allow_statuses=(403, 404)) for i in ids)
        return [row for row in rows if row]

    def create_folders(self, rows: Sequence[dict[str, Any]]) -> None:
        """Create folders with the given ids, in the order given (parents before their children)."""
        if rows:
            self.request("POST", "/folders", params={"fields": "id"}, payload=list(rows))

    def download(self, file_id: str) -> Iterator[bytes]:
        """The binary of file ``file_id`` as ``/assets`` serves it, in chunks of 64 KiB; the connection is
        closed when the iterator is exhausted or closed."""
        response = self.client.stream(f"/assets/{segment(file_id)}")
        try:
            yield from response.iter_content(chunk_size=64 * 1024)
        finally:
            response.close()

    def upload_file(self, file_id: str, fields: Mapping[str, str], filename: str, content_type: str,
                    content: Iterable[bytes], replace: bool) -> dict[str, Any]:
        """Create file ``file_id`` (``POST /files``) or replace its binary (``PATCH /files/{id}``) with
        ``content``, streamed as one multipart body; ``fields`` go first, as Directus requires. Return the row."""
        boundary = f"directus-sync-{uuid.uuid4().hex}"
        body = multipart_body(boundary, fields if replace else {"id": file_id, **fields}, filename, content_type,
                              content)
        path = f"/files/{segment(file_id)}" if replace else "/files"
        row = self.client.send_stream("PATCH" if replace else "POST", path, body,
                                      f"multipart/form-data; boundary={boundary}")
        return dict(row or {})

    def update_file(self, file_id: str, changes: Mapping[str, Any]) -> None:
        """Set metadata of file ``file_id`` (title, description, folder...), leaving its binary alone."""
        self.request("PATCH", f"/files/{segment(file_id)}", params={"fields": "id"}, payload=dict(changes))

    def files_held(self, collection: str, field: str, ids: Sequence[str], kind_field: str | None = None) -> set[str]:
        """The ids among ``ids`` that ``collection.field`` holds in some item (a many-to-any's ``field`` only in
        items whose ``kind_field`` names ``directus_files``). Directus's own collections are read at their own
        paths; ``directus_settings`` is one item."""
        if collection == "directus_settings":
            settings = self.request("GET", "/settings", params={"fields": field}) or {}
            return {str(settings[field])} & set(ids) if settings.get(field) else set()
        path = SYSTEM_PATHS.get(collection, f"/items/{segment(collection)}")

        def params_for(chunk: list[Any]) -> dict[str, Any]:
            where: dict[str, Any] = {field: {"_in": chunk}}
            if kind_field:
                where = {"_and": [where, {kind_field: {"_eq": "directus_files"}}]}
            # One row per distinct id held, however many items hold it: a chunk's answer is never cut short.
            return {"filter": json.dumps(where), "groupBy": field, "aggregate[count]": "*"}

        return {str(row[field]) for row in self._read_keyed(path, list(ids), params_for) if row.get(field)}

    def delete_files(self, ids: Sequence[str]) -> None:
        """Delete the files ``ids``: their rows and their binaries in the instance's storage."""
        if ids:
            self.request("DELETE", "/files", payload=list(ids))

    def update_files(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Set metadata of several files in one request: each row holds a file's ``id`` and its own changes
        (Directus updates them in one transaction: all or none)."""
        if rows:
            self.request("PATCH", "/files", params={"fields": "id"}, payload=[dict(r) for r in rows])

    # -- notifications ------------------------------------------------------------------------------

    def notify(self, recipients: Iterable[str], subject: str, message: str) -> None:
        """Create one in-app notification per recipient (and an e-mail where they enabled that)."""
        payload = [{"recipient": r, "subject": subject, "message": message} for r in recipients]
        if payload:
            self.request("POST", "/notifications", payload=payload)


def multipart_body(boundary: str, fields: Mapping[str, str], filename: str, content_type: str,
                   content: Iterable[bytes]) -> Iterator[bytes]:
    """A ``multipart/form-data`` body produced part by part: the text ``fields``, then one file part whose
    bytes are ``content`` as it comes, so that a file of any size is never held whole in memory."""
    for name, value in fields.items():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n').encode()
        yield value.encode() + b"\r\n"
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_quoted(filename)}"\r\n'
           f"Content-Type: {content_type}\r\n\r\n").encode()
    for chunk in content:
        if chunk:
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _quoted(value: str) -> str:
    """A header parameter's value: quotes and line breaks escaped as browsers send them."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
