"""The activity trigger: one small poll per interval, a cursor that never fires twice or moves back, backoff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from directus_sync.airflow.schedule import activity_asset
from directus_sync.airflow.trigger import ActivityPoller, DirectusActivityTrigger
from directus_sync.directus.activity import newest_change_params

from .rows import remote

SYNC_USER = "sync-user"
EDITOR = "editor"


@dataclass
class ActivityLog:
    """A source's activity log that answers ``/activity`` queries as Directus does, filter and all."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0

    def add(self, count: int = 1, collection: str = "articles", action: str = "update",
            user: str | None = EDITOR) -> int:
        for _ in range(count):
            self.rows.append({"id": len(self.rows) + 1, "collection": collection, "action": action, "user": user,
                              "timestamp": datetime.now(UTC).isoformat()})
        return len(self.rows)

    def query(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.requests += 1
        found = [r for r in self.rows if _matches(r, json.loads(params["filter"]))]
        found.sort(key=lambda r: r["id"], reverse=params["sort"] == "-id")
        return [{f: r[f] for f in params["fields"].split(",")} for r in found[: int(params["limit"])]]

    async def fetch(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.query(params)


OPERATORS = {
    "_gt": lambda actual, value: actual > value,
    "_in": lambda actual, value: actual in value,
    "_neq": lambda actual, value: actual != value,
    "_eq": lambda actual, value: actual == value,
    "_null": lambda actual, value: (actual is None) == value,
}


def _matches(row: dict[str, Any], rule: dict[str, Any]) -> bool:
    """The subset of Directus's filter language the trigger uses."""
    for key, test in rule.items():
        if key == "_and":
            ok = all(_matches(row, r) for r in test)
        elif key == "_or":
            ok = any(_matches(row, r) for r in test)
        else:
            ((op, value),) = test.items()
            ok = OPERATORS[op](row[key], value)
        if not ok:
            return False
    return True


def poll(poller: ActivityPoller, log: ActivityLog) -> dict[str, Any] | None:
    return asyncio.run(poller.poll(log.fetch))


# -- polling and the cursor -----------------------------------------------------------------------------


def test_one_small_request_per_poll_asks_only_for_the_newest_foreign_item_change() -> None:
    params = newest_change_params(["articles", "authors"], 41, SYNC_USER)
    assert (params["sort"], params["limit"], params["fields"]) == ("-id", 1, "id,timestamp")
    clauses = json.loads(params["filter"])["_and"]
    assert {"id": {"_gt": 41}} in clauses
    assert {"collection": {"_in": ["articles", "authors"]}} in clauses
    assert {"action": {"_in": ["create", "update", "delete"]}} in clauses
    assert {"_or": [{"user": {"_neq": SYNC_USER}}, {"user": {"_null": True}}]} in clauses


def test_a_bulk_import_between_two_polls_is_one_event_and_moves_the_cursor_past_it() -> None:
    log, poller = ActivityLog(), ActivityPoller(["articles", "authors"], SYNC_USER)
    assert poll(poller, log) is None
    newest = log.add(10_000, action="create")
    event = poll(poller, log)
    assert event is not None
    assert (event["after_id"], event["newest_id"]) == (0, newest)
    assert poller.cursor == newest
    assert poll(poller, log) is None  # nothing new since
    assert log.requests == 3


def test_each_poll_with_new_activity_fires_once_from_where_the_last_stopped() -> None:
    log, poller = ActivityLog(), ActivityPoller(["articles"], SYNC_USER)
    first = log.add(3)
    assert poll(poller, log) == {"after_id": 0, "newest_id": first, "newest_at": log.rows[-1]["timestamp"]}
    second = log.add(2, action="delete")
    event = poll(poller, log)
    assert event is not None and (event["after_id"], event["newest_id"]) == (first, second)


def test_the_sync_users_own_writes_never_fire_so_two_way_sync_does_not_echo() -> None:
    log, poller = ActivityLog(), ActivityPoller(["articles"], SYNC_USER)
    log.add(500, user=SYNC_USER)
    assert poll(poller, log) is None
    assert poller.cursor == 0
    newest = log.add(1, user=None)  # a flow or script without a user is a real change
    assert poll(poller, log) == {"after_id": 0, "newest_id": newest, "newest_at": log.rows[-1]["timestamp"]}


def test_other_collections_and_non_item_actions_do_not_fire() -> None:
    log, poller = ActivityLog(), ActivityPoller(["articles"], SYNC_USER)
    log.add(collection="pages")
    log.add(action="login")
    log.add(action="comment")
    assert poll(poller, log) is None


def test_a_resumed_cursor_fires_only_for_activity_after_it() -> None:
    log = ActivityLog()
    seen = log.add(20)
    poller = ActivityPoller(["articles"], SYNC_USER, cursor=seen)
    assert poll(poller, log) is None
    newest = log.add()
    event = poll(poller, log)
    assert event is not None and event["newest_id"] == newest


def test_an_answer_behind_the_cursor_never_moves_it_back() -> None:
    poller = ActivityPoller(["articles"], SYNC_USER, cursor=100)

    async def stale(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"id": 90, "timestamp": "2026-01-01T00:00:00Z"}]

    assert asyncio.run(poller.poll(stale)) is None
    assert poller.cursor == 100


def test_failed_polls_back_off_and_a_success_resets_the_interval() -> None:
    poller = ActivityPoller(["articles"], SYNC_USER)
    assert poller.delay(2) == 2
    poller.failures = 3
    assert poller.delay(2) == 16
    poller.failures = 30
    assert poller.delay(2) == 60
    poll(poller, ActivityLog())
    assert poller.delay(2) == 2


# -- the trigger, end to end against a local HTTP server -----------------------------------------------


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ActivityLog, str, asyncio.AbstractEventLoop]]:
    """An HTTP server answering /users/me and /activity from an ActivityLog, and a connection to it."""
    log = ActivityLog()
    seen_tokens: list[str] = []

    async def me(request: web.Request) -> web.Response:
        seen_tokens.append(request.headers["Authorization"])
        return web.json_response({"data": {"id": SYNC_USER}})

    async def activity(request: web.Request) -> web.Response:
        return web.json_response({"data": log.query(dict(request.query))})

    app = web.Application()
    app.router.add_get("/users/me", me)
    app.router.add_get("/activity", activity)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("AIRFLOW_CONN_DIRECTUS_EU", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "password": "the-sync-token"}))
    yield log, "directus_eu", loop
    assert seen_tokens and all(t == "Bearer the-sync-token" for t in seen_tokens)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_the_trigger_fires_for_past_activity_then_for_each_new_burst(
        source: tuple[ActivityLog, str, asyncio.AbstractEventLoop]) -> None:
    log, conn, loop = source
    trigger = DirectusActivityTrigger(source_conn_id=conn, collections=["articles"], remote="eu_to_us",
                                      poll_interval=0.05)
    log.add(3)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        events = trigger.run()
        first = (await asyncio.wait_for(anext(events), 10)).payload
        log.add(50, user=SYNC_USER)  # an echo: must not fire
        pending = asyncio.ensure_future(anext(events))
        done, _ = await asyncio.wait({pending}, timeout=0.5)
        assert not done, "the sync user's writes fired an event"
        log.add(7, action="create")
        second = (await asyncio.wait_for(pending, 10)).payload
        await events.aclose()  # type: ignore[attr-defined]
        return first, second

    first, second = loop.run_until_complete(scenario())
    assert first == {"remote": "eu_to_us", "after_id": 0, "newest_id": 3, "newest_at": log.rows[2]["timestamp"]}
    assert (second["after_id"], second["newest_id"]) == (3, 60)


def test_the_trigger_serializes_connection_ids_and_names_only() -> None:
    classpath, kwargs = activity_asset(remote()).watchers[0].trigger.serialize()
    assert classpath == "directus_sync.airflow.trigger.DirectusActivityTrigger"
    assert kwargs == {"source_conn_id": "directus_eu", "collections": ["articles", "authors"], "remote": "eu_to_us",
                      "poll_interval": 2.0, "timeout": 30.0}
    assert DirectusActivityTrigger(**kwargs).serialize() == (classpath, kwargs)
