"""Event mode: the activity trigger's polling and cursor, and the windows of event-mode runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable

from directus_sync.airflow.factory import build_sync_dag
from directus_sync.airflow.schedule import activity_asset, schedule_for
from directus_sync.airflow.trigger import ActivityPoller, DirectusActivityTrigger
from directus_sync.airflow.watermark import event_window, uses_event_window
from directus_sync.config import RemoteSource, TriggerMode, parse_row
from directus_sync.directus.activity import newest_change_params
from directus_sync.directus.client import base_url_of

SYNC_USER = "sync-user"
EDITOR = "editor"


def remote(**row: Any) -> RemoteSource:
    return RemoteSource.model_validate({
        "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
        "schema": [{"name": "articles", "fields": ["title"]}, {"name": "authors", "fields": ["name"]}], **row})


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


def test_base_urls_are_built_as_the_http_hook_builds_them() -> None:
    assert base_url_of("https://cms.example.com", None, None) == "https://cms.example.com"
    assert base_url_of("cms.example.com", "https", 8443) == "https://cms.example.com:8443"
    assert base_url_of("localhost", None, 8055) == "http://localhost:8055"


# -- configuration and schedule ----------------------------------------------------------------------


def test_trigger_defaults_to_schedule_and_rejects_unknown_modes() -> None:
    assert remote().trigger is TriggerMode.SCHEDULE
    assert remote(trigger=None, event_poll_seconds=None).event_poll_seconds == 2.0
    assert remote(trigger="both").listens_to_events
    broken = parse_row({"name": "x", "source_conn_id": "a", "remote_conn_id": "b",
                        "schema": [{"name": "c", "fields": ["f"]}], "trigger": "webhook"})
    assert broken.status == "broken"
    assert "trigger" in broken.error  # type: ignore[union-attr]


def test_each_mode_gets_its_schedule() -> None:
    assert isinstance(schedule_for(remote()), CronDataIntervalTimetable)
    events_dag = build_sync_dag(remote(trigger="events"))
    assert type(events_dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert events_dag.max_active_runs == 1  # what makes Airflow coalesce events into the next run
    assert set(events_dag.task_ids) == {"sync_changes", "record_run", "notify_on_failure"}
    assert events_dag.get_task("record_run").upstream_task_ids == {"sync_changes"}
    assert events_dag.get_task("notify_on_failure").upstream_task_ids == {"sync_changes"}
    for outcome_task in ("record_run", "notify_on_failure"):  # they read the one task's result
        assert [a.operator.task_id for a in events_dag.get_task(outcome_task).op_args] == ["sync_changes"]
    both = schedule_for(remote(trigger="both", schedule="@hourly"))
    assert isinstance(both, AssetOrTimeSchedule)
    assert isinstance(both.timetable, CronDataIntervalTimetable)
    assert build_sync_dag(remote(trigger="both"), reconcile=True).timetable.__class__ is CronDataIntervalTimetable


def test_the_activity_asset_names_the_connection_not_the_url() -> None:
    asset = activity_asset(remote(trigger="events", event_poll_seconds=0.5))
    assert asset.uri == "x-directus-activity://directus_eu/eu_to_us"
    assert asset.name == "directus_sync__eu_to_us__source_activity"
    assert asset.watchers[0].trigger.poll_interval == 0.5  # type: ignore[attr-defined]


# -- windows -------------------------------------------------------------------------------------------


def context(run_type: str = "asset_triggered", dag_id: str = "directus_sync__eu_to_us",
            start: datetime | None = None) -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id=dag_id),
            "dag_run": SimpleNamespace(run_type=run_type, start_date=start or datetime(2026, 11, 26, 12, tzinfo=UTC))}


def test_an_event_run_reads_from_the_last_synced_end_minus_overlap_to_its_own_start() -> None:
    synced = datetime(2026, 11, 26, 11, 59, 30, tzinfo=UTC)
    window = event_window(remote(trigger="events"), context(), synced)
    assert not window.full
    assert window.start == synced - timedelta(seconds=60)
    assert window.end == datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_consecutive_event_runs_leave_no_gap() -> None:
    config = remote(trigger="both", overlap_seconds=0)
    first = event_window(config, context(start=datetime(2026, 11, 26, 12, tzinfo=UTC)), None)
    second = event_window(config, context("scheduled", start=datetime(2026, 11, 26, 12, 0, 9, tzinfo=UTC)),
                          first.end)
    assert first.full  # nothing synced yet: a full copy as of the run's start
    assert second.start == first.end


def test_full_resync_is_honoured_in_event_mode() -> None:
    assert event_window(remote(trigger="events"), context(), datetime.now(UTC), full_resync=True).full


def test_backfills_the_reconcile_dag_and_schedule_mode_keep_their_interval_windows() -> None:
    events = remote(trigger="events")
    assert uses_event_window(events, context("asset_triggered"))
    assert uses_event_window(events, context("scheduled"))
    assert uses_event_window(events, context("manual"))
    assert not uses_event_window(events, context("backfill"))
    assert not uses_event_window(events, context(dag_id=events.reconcile_dag_id))
    assert not uses_event_window(remote(), context("asset_triggered"))


# -- the one-task sync of event-mode DAGs ----------------------------------------------------------------


GONE = "s3://nowhere@bucket/never-written"
WINDOW_END = datetime(2026, 11, 28, 11, tzinfo=UTC)


@dataclass
class Steps:
    """What run_sync called, in order, the actions whose writes the remote refuses, and the watermark set."""

    done: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    synced_until: list[datetime] = field(default_factory=list)
    event_window: bool = True  # whether the extraction read from the watermark (not in a backfill)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Steps:
    """Replace the task bodies run_sync chains with recorders."""
    from directus_sync.airflow import event_task, steps
    from directus_sync.engine.extract import ChangeManifest
    from directus_sync.engine.plan import SyncPlan
    from directus_sync.engine.results import Applied, Extracted, Planned, WindowRecord

    record = Steps()
    planned = Planned(plan=SyncPlan(run_folder=GONE, window="w", collections=[]))

    def apply_writes(remote: RemoteSource, plan: Planned, action: Any, context: Any) -> Applied:
        assert plan is planned
        record.done.append(action)
        applied = Applied(action=action, written={"articles": 1})
        if action in record.refuse:
            raise steps.PoisonItemsError(f"refused {action}", delivered=[applied])
        return applied

    def extract_changes(remote: RemoteSource, context: Any) -> Extracted:
        record.done.append("extract")
        return Extracted(manifest=ChangeManifest(run_folder=GONE, window="w", full=False, collections=[]),
                         window=WindowRecord(end=WINDOW_END, event_window=record.event_window))

    def filter_schema(remote: RemoteSource, extracted: Extracted, context: Any) -> Planned:
        assert extracted.window.end == WINDOW_END
        record.done.append("plan")
        return planned

    monkeypatch.setattr(steps, "extract_changes", extract_changes)
    monkeypatch.setattr(steps, "filter_schema", filter_schema)
    monkeypatch.setattr(steps, "apply_writes", apply_writes)
    monkeypatch.setattr(steps, "cleanup_staging", lambda context: record.done.append("cleanup"))

    @contextlib.contextmanager
    def lease_held(remote: RemoteSource, context: Any, first: bool) -> Iterator[None]:
        record.done.append(f"lease (first={first})")
        yield
        record.done.append("lease kept")

    monkeypatch.setattr(steps, "lease_held", lease_held)
    def mark_synced(remote: RemoteSource, window_end: datetime) -> None:
        record.done.append("mark_synced")
        record.synced_until.append(window_end)

    monkeypatch.setattr(event_task.watermark, "mark_synced", mark_synced)
    return record


def test_one_task_runs_every_step_in_order_and_then_advances_the_watermark(recorded: Steps) -> None:
    from directus_sync.airflow.event_task import run_sync
    from directus_sync.engine.results import Applied, RunOutcome, dump

    synced = run_sync(remote(trigger="events"), {})
    assert recorded.done == ["lease (first=True)", "extract", "plan", "delete", "update", "create", "cleanup",
                          "mark_synced", "lease kept"]
    assert recorded.synced_until == [WINDOW_END]  # the end of the window the extraction read
    assert synced.steps[2:] == [Applied(action=a, written={"articles": 1}) for a in ("delete", "update", "create")]
    assert RunOutcome.of([dump(synced)]).succeeded


def test_a_run_that_did_not_read_from_the_watermark_leaves_it_alone(recorded: Steps) -> None:
    """A backfill of an event-mode DAG replays its interval: its end is no watermark."""
    from directus_sync.airflow.event_task import run_sync

    recorded.event_window = False
    run_sync(remote(trigger="events"), {})
    assert "cleanup" in recorded.done and recorded.synced_until == []


def test_refused_items_let_the_other_actions_run_and_keep_the_watermark(recorded: Steps) -> None:
    from directus_sync.airflow import steps
    from directus_sync.airflow.event_task import run_sync

    recorded.refuse.add("update")
    delivered: list[Any] = []
    with pytest.raises(steps.PoisonItemsError, match="refused update"):
        run_sync(remote(trigger="events"), {}, delivered)
    assert recorded.done == ["lease (first=True)", "extract", "plan", "delete", "update", "create"
                          ]  # no cleanup, no watermark
    # What the failure record of the task carries: the window, the plan and every action's counts.
    assert [getattr(r, "action", r.step) for r in delivered] == [
        "extracted", "planned", "delete", "update", "create"]
