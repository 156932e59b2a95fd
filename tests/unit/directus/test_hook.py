"""The Directus hook: activity filters, key chunks, reads under a page-size cap, collection settings."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
import requests

from directus_sync.directus import hook as hook_module
from directus_sync.directus.activity import activity_filter
from directus_sync.directus.client import Transport, segment
from directus_sync.directus.errors import DirectusError, refused_limit
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.paging import PageSizer, chunk_keys, sized_batches


def test_the_activity_filter_reads_item_actions_in_the_window_or_the_id_spans_after_the_cursor() -> None:
    query = activity_filter(["articles"], 41, None, ("2026-11-26T12:00:00.000Z", "2026-11-26T12:05:00.000Z"),
                            [(100, 120)])
    clauses = query["_and"]
    assert {"collection": {"_in": ["articles"]}} in clauses
    assert {"action": {"_in": ["create", "update", "delete"]}} in clauses
    assert {"id": {"_gt": 41}} in clauses
    assert {"_or": [{"id": {"_between": [100, 120]}},
                    {"_and": [{"timestamp": {"_gte": "2026-11-26T12:00:00.000Z"}},
                              {"timestamp": {"_lt": "2026-11-26T12:05:00.000Z"}}]}]} in clauses


def test_an_activity_filter_with_nothing_to_read_matches_no_row() -> None:
    assert {"_or": [{"id": {"_null": True}}]} in activity_filter(["a"], 0, None)["_and"]


def test_echo_suppression_drops_the_sync_user_but_keeps_activity_without_a_user() -> None:
    query = activity_filter(["a"], 0, "sync-user", ("s", "e"))
    assert {"_or": [{"user": {"_neq": "sync-user"}}, {"user": {"_null": True}}]} in query["_and"]


def test_key_chunks_stay_under_the_url_budget_and_keep_every_key() -> None:
    keys = [f"{n:032x}" for n in range(1_000)]
    chunks = list(chunk_keys(keys, max_chars=2_000))
    assert [k for chunk in chunks for k in chunk] == keys
    assert all(len(json.dumps(list(chunk))) <= 2_000 for chunk in chunks)
    assert len(chunks) > 1


def test_key_chunks_also_stay_under_a_count() -> None:
    chunks = list(chunk_keys(list(range(250)), max_count=100))
    assert [len(c) for c in chunks] == [100, 100, 50]


def test_the_cap_is_read_from_directus_refusing_a_limit() -> None:
    refused = DirectusError("c", "GET", "/activity", 400, 'Invalid query. "limit" must be less than or equal to 100.')
    assert refused_limit(refused) == 100
    assert refused_limit(DirectusError("c", "GET", "/x", 400, "Invalid payload")) is None


class CappedDirectus(DirectusHook):
    """Answers reads as an instance with ``QUERY_LIMIT_MAX`` = ``cap`` does, over ``rows`` keyed by ``id``.

    ``advertised`` is what ``/server/info`` says (None: it says nothing, as to a user it does not know).
    """

    def __init__(self, conn_id: str, rows: list[dict[str, Any]], cap: int, advertised: int | None) -> None:
        super().__init__(conn_id)
        self.rows, self.cap, self.advertised = rows, cap, advertised
        self.limits: list[int] = []

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, payload: Any = None,
                allow_statuses: Any = (), measured: Any = None) -> Any:
        params = params or {}
        if path == "/server/info":
            return {"queryLimit": {"max": self.advertised}} if self.advertised is not None else {}
        limit = int(params["limit"])
        self.limits.append(limit)
        if limit > self.cap:
            raise DirectusError(self.directus_conn_id, method, path, 400,
                                f'Invalid query. "limit" must be less than or equal to {self.cap}.')
        wanted = set(json.loads(params["filter"])["id"]["_in"])
        found = [r for r in self.rows if r["id"] in wanted][: self.cap if limit == -1 else limit]
        if measured:
            measured(len(json.dumps({"data": found})))
        return found


@pytest.mark.parametrize("advertised", [100, None])
def test_a_keyed_read_under_a_page_cap_returns_every_key(advertised: int | None) -> None:
    hook_module._PAGE_SIZE_CAPS.clear()
    rows = [{"id": n} for n in range(1, 1_501)]
    hook = CappedDirectus(f"capped_{advertised}", rows, cap=100, advertised=advertised)
    found = hook.read_items("articles", "id", list(range(1, 1_501)), ["id"])
    assert sorted(r["id"] for r in found) == list(range(1, 1_501))
    assert max(hook.limits[-1:]) <= 100
    assert hook.page_size_cap == 100  # learnt once, kept for the connection


class ShiftingItems(DirectusHook):
    """Items with UUID-like string keys read by offset, where rows are deleted between two page reads."""

    def __init__(self, keys: list[str], deletions: dict[int, list[str]], insertions: dict[int, int] | None = None,
                 cap: int | None = None, conn_id: str = "shifting") -> None:
        super().__init__(conn_id)
        self.keys = sorted(keys)
        self.deletions = deletions  # after the n-th read, these keys are gone
        self.insertions = insertions or {}  # after the n-th read, this many new keys sorting first
        self.cap = cap
        self.reads = 0

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, payload: Any = None,
                allow_statuses: Any = (), measured: Any = None) -> Any:
        params = params or {}
        if path == "/server/info":
            return {"queryLimit": {"max": self.cap}} if self.cap else {}
        assert "filter" not in params  # no _gt on such keys: Directus refuses it
        offset, limit = int(params.get("offset", 0)), int(params["limit"])
        assert self.cap is None or limit <= self.cap
        page = [{"id": k} for k in self.keys[offset:offset + limit]]
        self.reads += 1
        assert self.reads < 5_000, "the reader does not finish"
        for key in self.deletions.get(self.reads, []):
            self.keys.remove(key)
        self.keys = sorted(self.keys + [f"0-new-{self.reads}-{n}" for n in range(self.insertions.get(self.reads, 0))])
        if measured:
            measured(len(json.dumps({"data": page})))
        return page


@pytest.mark.parametrize("deleted_between_pages", [1, 15, 250])
def test_an_offset_read_skips_no_row_when_rows_before_it_are_deleted(deleted_between_pages: int) -> None:
    keys = [f"{n:08x}-key" for n in range(1_000)]
    gone = keys[10:10 + deleted_between_pages]  # all before the second page's offset
    hook = ShiftingItems(keys, {1: gone})
    read = [row["id"] for page in hook.iter_items("c", "id", ["id"], 100, keyset=False) for row in page]
    assert set(keys) - set(gone) <= set(read)  # every row that stayed is read
    assert len(read) == len(set(read))  # and none twice


@pytest.mark.parametrize("inserts", [{n: 5 for n in range(1, 40)}, {2: 150}, {2: 400, 3: 400}, {2: 2_000}],
                         ids=["5 before every page", "a burst of 150", "two bursts of 400", "a burst of 2,000"])
def test_an_offset_read_under_inserts_before_it_finishes_reads_every_row_and_none_twice(
        inserts: dict[int, int]) -> None:
    """Rows inserted meanwhile need not be listed (their activity carries them); rows there all along must be."""
    keys = [f"{n:08x}-key" for n in range(1_000)]
    hook = ShiftingItems(keys, {}, insertions=inserts, conn_id=f"inserts{sorted(inserts.items())[:2]}")
    read = [row["id"] for page in hook.iter_items("c", "id", ["id"], 100, keyset=False) for row in page]
    assert set(keys) <= set(read)
    assert len(read) == len(set(read))


def test_an_offset_read_with_one_row_per_page_finishes() -> None:
    keys = [f"{n:08x}-key" for n in range(30)]
    hook = ShiftingItems(keys, {}, cap=1, conn_id="cap-one")
    read = [row["id"] for page in hook.iter_items("c", "id", ["id"], 100, keyset=False) for row in page]
    assert read == keys


def test_activity_tracking_is_off_only_when_the_collection_s_accountability_is_null() -> None:
    answers: dict[str, Any] = {
        "/collections/tracked": {"collection": "tracked", "meta": {"accountability": "all"}},
        "/collections/activity_only": {"collection": "activity_only", "meta": {"accountability": "activity"}},
        "/collections/untracked": {"collection": "untracked", "meta": {"accountability": None}},
        "/collections/bare_table": {"collection": "bare_table", "meta": None},  # Directus treats it as "all"
    }

    class Answering(DirectusHook):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            assert method == "GET"
            return answers[path]

    hook = Answering("directus_x")
    assert [hook.activity_tracked(c) for c in ("tracked", "activity_only", "untracked", "bare_table")] == [
        True, True, False, True]


def test_the_relations_are_one_unpaged_read_of_relations() -> None:
    """Directus reads the relations without a limit, whatever QUERY_LIMIT_MAX (checked on 12.4.0)."""
    calls: list[tuple[str, str, Any]] = []

    class Answering(DirectusHook):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            calls.append((method, path, kwargs.get("params")))
            return [{"collection": "articles", "field": "author", "related_collection": "authors"}]

    assert Answering("directus_x").relations() == [
        {"collection": "articles", "field": "author", "related_collection": "authors"}]
    assert calls == [("GET", "/relations", None)]


def test_the_page_sizer_starts_small_grows_by_four_at_most_and_shrinks_at_once() -> None:
    sizer = PageSizer(budget=1_000_000, first=16)
    assert sizer.next(1_000) == 16
    sizer.measured(16 * 100, 16)  # 100 bytes per item: the budget holds 10,000
    assert sizer.next(1_000) == 64
    sizer.measured(64 * 100, 64)
    assert sizer.next(1_000) == 256
    sizer.measured(256 * 100, 256)
    assert sizer.next(1_000) == 1_000  # batch_size still caps it
    sizer.measured(2 * 200_000, 2)  # larger items: 5 fit
    assert sizer.next(1_000) == 5
    sizer.measured(5 * 100, 5)  # smaller ones again: the largest seen still counts
    assert sizer.next(1_000) == 5
    sizer.measured(3_000_000, 1)  # one item over the budget: read alone
    assert sizer.next(1_000) == 1
    sizer.measured(0, 0)  # an empty answer teaches nothing
    assert sizer.next(1_000) == 1
    assert PageSizer(budget=100).next(3) == 3


def test_sized_batches_cut_each_batch_with_what_the_sizer_knows_when_it_is_cut() -> None:
    sizer = PageSizer(budget=1_000, first=2)
    batches = sized_batches(list(range(20)), 100, sizer)
    assert next(batches) == [0, 1]
    sizer.measured(200, 2)  # 100 bytes per item: 10 fit, growth allows 8
    assert next(batches) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert [len(b) for b in batches] == [8, 2]  # no answer since: no growth


class LargeItems(DirectusHook):
    """``count`` items of ``width`` characters each, keyed 1..count, read by keys, keyset or offset."""

    def __init__(self, count: int, width: int, budget: int) -> None:
        super().__init__(f"large_{count}_{width}", batch_bytes=budget)
        self.rows = [{"id": n, "body": "x" * width} for n in range(1, count + 1)]
        self.limits: list[int] = []
        self.answered: list[int] = []  # body bytes per answer

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, payload: Any = None,
                allow_statuses: Any = (), measured: Any = None) -> Any:
        params = params or {}
        if path == "/server/info":
            return {}
        limit, offset = int(params["limit"]), int(params.get("offset", 0))
        self.limits.append(limit)
        where = json.loads(params.get("filter", "{}")).get("id", {})
        rows = [r for r in self.rows if ("_in" not in where or r["id"] in where["_in"])
                and ("_gt" not in where or r["id"] > where["_gt"])][offset:offset + limit]
        body = json.dumps({"data": rows})
        self.answered.append(len(body))
        if measured:
            measured(len(body))
        return rows


@pytest.mark.parametrize("keyset", [True, False])
def test_pages_of_large_items_stay_within_the_byte_budget_and_read_every_item(keyset: bool) -> None:
    hook = LargeItems(count=200, width=10_000, budget=100_000)  # ten items a page fit the budget
    read = [row["id"] for page in hook.iter_items("c", "id", ["id", "body"], 1_000, keyset=keyset) for row in page]
    assert read == list(range(1, 201))
    assert hook.limits[0] == 16  # the size is not known yet: a small first page
    assert max(hook.limits[1:]) <= 10
    assert max(hook.answered[1:]) <= 100_000 + 100


def test_items_larger_than_the_budget_are_read_one_by_keys_and_two_by_offset() -> None:
    hook = LargeItems(count=20, width=50_000, budget=30_000)
    found = hook.read_items("c", "id", list(range(1, 21)), ["id", "body"])
    assert sorted(r["id"] for r in found) == list(range(1, 21))
    assert hook.limits[1:] == [1] * (len(hook.limits) - 1)
    offset = LargeItems(count=20, width=50_000, budget=30_000)
    read = [row["id"] for page in offset.iter_items("c", "id", ["id", "body"], 1_000, keyset=False) for row in page]
    assert read == list(range(1, 21))  # pages of two, each reaching back one row: none skipped, none twice
    assert offset.limits[1:] == [2] * (len(offset.limits) - 1)


def test_keyed_reads_share_the_sizer_of_their_collection_and_fields() -> None:
    hook = LargeItems(count=100, width=10_000, budget=110_000)  # items take ~10 kB with their JSON
    hook.read_items("c", "id", list(range(1, 51)), ["id", "body"])
    assert hook.limits[:2] == [16, 10]
    hook.limits.clear()
    hook.read_items("c", "id", list(range(51, 101)), ["id", "body"])
    assert hook.limits[0] == 10  # learnt by the previous read
    hook.limits.clear()
    hook.read_items("c", "id", list(range(1, 101)), ["id"])
    assert hook.limits[0] == 16  # keys only: another sizer


def test_several_files_metadata_is_one_patch_of_rows_each_with_its_own_changes() -> None:
    """Directus 12.4's ``PATCH /files`` with a list updates each row with its own payload (updateBatch)."""
    calls: list[tuple[str, str, Any]] = []

    class Recording(DirectusHook):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            calls.append((method, path, kwargs.get("payload")))
            return []

    hook = Recording("directus_x")
    hook.update_files([{"id": "a", "uploaded_on": "t1"}, {"id": "b", "title": "B", "uploaded_on": "t2"}])
    hook.update_files([])
    assert calls == [("PATCH", "/files", [{"id": "a", "uploaded_on": "t1"},
                                          {"id": "b", "title": "B", "uploaded_on": "t2"}])]


def test_every_collection_name_is_one_quoted_path_segment() -> None:
    """Names are validated as identifiers first; quoting keeps a path from ever reaching another endpoint."""
    seen: list[str] = []

    class Recording(DirectusHook):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            seen.append(path)
            return []

    hook = Recording("directus_x")
    hook.fields("../users")
    hook.has_items("a/b?x", "id")
    hook.delete_items("..", [1])
    assert seen == ["/fields/%2E%2E%2Fusers", "/items/a%2Fb%3Fx", "/items/%2E%2E"]
    assert segment("blog-posts_2024") == "blog-posts_2024"


TRANSPORT_EXTRAS = [
    ({}, True, None, {}),
    ({"verify": False}, False, None, {}),
    ({"verify": "false"}, False, None, {}),
    ({"verify": "/etc/ssl/company-ca.pem"}, "/etc/ssl/company-ca.pem", None, {}),
    ({"verify_ssl": False, "cert": ["/c.pem", "/k.pem"]}, False, ("/c.pem", "/k.pem"), {}),
    ({"proxies": {"https": "http://proxy:3128"}}, True, None, {"https": "http://proxy:3128"}),
    ({"proxy": "http://proxy:3128"}, True, None, {"http": "http://proxy:3128", "https": "http://proxy:3128"}),
]


def what_a_request_sends(hook: DirectusHook, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keyword arguments the hook's session is called with for one request (which is not sent)."""
    sent: dict[str, Any] = {}

    def request(method: str, url: str, **kwargs: Any) -> Any:
        sent.update(kwargs)
        raise requests.ConnectionError("not sent")

    monkeypatch.setattr(hook.client.session, "request", request)
    with pytest.raises(DirectusError):
        hook.request("GET", "/users/me")
    return sent


@pytest.mark.parametrize(("extra", "verify", "cert", "proxies"), TRANSPORT_EXTRAS, ids=str)
def test_the_tasks_requests_and_the_triggers_hook_read_the_same_extras(
        extra: dict[str, Any], verify: Any, cert: Any, proxies: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DIRECTUS_X", json.dumps(
        {"conn_type": "http", "host": "https://cms.example.com", "password": "t", "extra": extra}))
    sent = what_a_request_sends(DirectusHook("directus_x"), monkeypatch)
    assert (sent["verify"], sent["cert"], sent["proxies"]) == (verify, cert, proxies)
    transport = Transport.from_extra(extra)
    assert (transport.verify, transport.cert, dict(transport.proxies)) == (verify, cert, proxies)
    assert transport.proxy_for("https://cms.example.com/activity") == proxies.get("https")


def test_the_triggers_tls_settings_follow_verify() -> None:
    assert Transport(verify=False).ssl_context() is False
    default = Transport().ssl_context()
    assert isinstance(default, ssl.SSLContext) and default.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(FileNotFoundError):  # a CA bundle path is loaded, not taken for "true"
        Transport(verify="/nonexistent/ca.pem").ssl_context()


def test_the_connections_ca_bundle_wins_over_requests_ca_bundle_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE override a session's ``verify``; each request passes it explicitly."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("AIRFLOW_CONN_DIRECTUS_X", json.dumps(
        {"conn_type": "http", "host": "https://cms.example.com", "password": "t", "extra": {"verify": "/ca.pem"}}))
    assert what_a_request_sends(DirectusHook("directus_x"), monkeypatch)["verify"] == "/ca.pem"


def test_the_triggers_tls_settings_take_the_environments_ca_bundle_as_requests_does(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """With verify left at true, requests reads REQUESTS_CA_BUNDLE: the trigger's client must trust the same CAs."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing-bundle.pem"))
    with pytest.raises(FileNotFoundError):
        Transport().ssl_context()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))  # a folder of CA files, as requests accepts
    assert isinstance(Transport().ssl_context(), ssl.SSLContext)


class SingletonHolder(DirectusHook):
    """A remote where ``home`` is a singleton collection: Directus answers ``/items/home`` with its one item
    (an object, not a list; controllers/items.js readSingleton), its defaults when no row matches."""

    def __init__(self, image: str | None) -> None:
        super().__init__("singleton_remote")
        self.image = image

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, payload: Any = None,
                allow_statuses: Any = (), measured: Any = None) -> Any:
        params = params or {}
        if path == "/server/info":
            return {}
        assert path == "/items/home" and params["groupBy"] == "hero"
        wanted = json.loads(params["filter"])["hero"]["_in"]
        return {"hero": self.image, "count": 1} if self.image in wanted else {"id": None}


def test_a_file_held_by_a_singleton_is_seen_and_the_singleton_does_not_break_the_read() -> None:
    assert DirectusHook.files_held(SingletonHolder("f1"), "home", "hero", ["f1", "f2"]) == {"f1"}  # type: ignore[arg-type]
    assert DirectusHook.files_held(SingletonHolder("f9"), "home", "hero", ["f1", "f2"]) == set()  # type: ignore[arg-type]
