"""The activity cursor: what a run reads by id, which ids it waits for, and when the horizon is passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from directus_sync.engine.cursor import (
    LATE_COMMIT_LIMIT,
    ActivityCursor,
    Gap,
    advance,
    beyond_horizon,
    find_gaps,
    start,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class FakeActivity:
    """An activity log whose visible rows are ``visible`` (id -> timestamp), as the sync user sees it."""

    directus_conn_id = "source"

    def __init__(self, visible: dict[int, datetime]) -> None:
        self.visible = visible
        self.counts = 0

    def activity_head(self) -> int:
        return max(self.visible, default=0)

    def activity_count(self, low: int, high: int) -> int:
        self.counts += 1
        return sum(1 for i in self.visible if low <= i <= high)

    def oldest_activity(self) -> tuple[int, str] | None:
        if not self.visible:
            return None
        first = min(self.visible)
        return first, self.visible[first].isoformat().replace("+00:00", "Z")

    def last_activity_before(self, timestamp: str) -> int:
        before = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        return max((i for i, at in self.visible.items() if at < before), default=0)


def log_of(ids: range | list[int], at: datetime = NOW) -> FakeActivity:
    return FakeActivity(dict.fromkeys(ids, at))


def test_a_complete_span_costs_one_count() -> None:
    source = log_of(range(1, 10_001))
    assert find_gaps(source, 1, 10_000, NOW) == []  # type: ignore[arg-type]
    assert source.counts == 1


def test_missing_ids_are_pinned_down_as_spans() -> None:
    source = log_of([i for i in range(1, 10_001) if not 4_000 <= i <= 4_999 and i != 7_777])
    gaps = find_gaps(source, 1, 10_000, NOW)  # type: ignore[arg-type]
    assert [(g.low, g.high) for g in gaps] == [(4_000, 4_999), (7_777, 7_777)]
    assert source.counts < 100


def test_a_run_reads_above_the_previous_head_and_the_gaps_it_still_waits_for() -> None:
    source = log_of([i for i in range(1, 201) if i != 150])
    previous = ActivityCursor(head=100, gaps=[Gap(low=40, high=42, since=NOW - timedelta(minutes=5))])
    step = advance(source, previous, NOW)  # type: ignore[arg-type]
    assert step.spans == [(40, 42), (101, 200)]
    assert step.cursor.head == 200
    assert [(g.low, g.high, g.since) for g in step.cursor.gaps] == [(150, 150, NOW)]  # 40-42 appeared


def test_a_gap_is_waited_for_until_the_late_commit_limit_then_read_once_more() -> None:
    source = log_of([1, 2, 4])
    waited = Gap(low=3, high=3, since=NOW - LATE_COMMIT_LIMIT + timedelta(seconds=1))
    step = advance(source, ActivityCursor(head=4, gaps=[waited]), NOW)  # type: ignore[arg-type]
    assert step.spans == [(3, 3)] and step.cursor.gaps == [waited]
    expired = Gap(low=3, high=3, since=NOW - LATE_COMMIT_LIMIT - timedelta(seconds=1))
    step = advance(source, ActivityCursor(head=4, gaps=[expired]), NOW)  # type: ignore[arg-type]
    assert step.spans == [(3, 3)] and step.cursor.gaps == []  # a commit since the last run is still read


def test_the_gaps_kept_stay_few_however_many_ids_stay_invisible() -> None:
    visible = [i for i in range(1, 20_001) if i % 3]  # every third id hidden, as a filtering policy would
    source = log_of(visible)
    cursor = ActivityCursor(head=0)
    for _ in range(4):
        source.visible.update(dict.fromkeys((i for i in range(cursor.head + 1, cursor.head + 5_001) if i % 3), NOW))
        cursor = advance(source, cursor, NOW).cursor  # type: ignore[arg-type]
        assert len(cursor.gaps) <= 64
    assert all(i not in source.visible for i in (3, 6, 9))  # still among the gaps' spans
    assert any(g.low <= 3 <= g.high for g in cursor.gaps)


def test_a_full_copy_waits_for_ids_missing_among_recent_activity() -> None:
    old = {i: NOW - timedelta(days=2) for i in range(1, 50) if i != 10}
    recent = {i: NOW - timedelta(minutes=1) for i in range(50, 100) if i != 70}
    cursor = start(FakeActivity({**old, **recent}), NOW)  # type: ignore[arg-type]
    assert cursor.head == 99
    assert [(g.low, g.high) for g in cursor.gaps] == [(70, 70)]  # id 10 is long settled


def test_a_window_before_the_oldest_visible_activity_is_beyond_the_horizon() -> None:
    source = FakeActivity({500: NOW - timedelta(days=30), 501: NOW})
    assert beyond_horizon(source, NOW - timedelta(days=40), None, NOW)  # type: ignore[arg-type]
    assert beyond_horizon(source, NOW - timedelta(days=1), None, NOW) is None  # type: ignore[arg-type]


def test_a_window_with_visible_activity_before_it_is_within_the_horizon() -> None:
    source = FakeActivity({500: NOW - timedelta(minutes=5), 501: NOW - timedelta(days=2)})  # a late commit
    assert beyond_horizon(source, NOW - timedelta(days=1), None, NOW) is None  # type: ignore[arg-type]


def test_with_a_cursor_a_quiet_source_is_not_beyond_the_horizon() -> None:
    source = FakeActivity({500: NOW - timedelta(minutes=1)})  # older rows hidden, nothing for a month
    assert beyond_horizon(source, NOW - timedelta(minutes=10), ActivityCursor(head=499), NOW) is None  # type: ignore[arg-type]


def test_activity_ids_going_back_are_beyond_the_horizon() -> None:
    source = FakeActivity({1: NOW, 2: NOW})  # the database was restored from an old backup
    assert beyond_horizon(source, NOW, ActivityCursor(head=900), NOW)  # type: ignore[arg-type]


def test_a_cursor_below_the_oldest_visible_id_is_beyond_the_horizon() -> None:
    source = FakeActivity({500: NOW - timedelta(days=3)})
    assert beyond_horizon(source, NOW, ActivityCursor(head=300), NOW)  # type: ignore[arg-type]
    assert beyond_horizon(source, NOW, ActivityCursor(head=499), NOW) is None  # type: ignore[arg-type]


def test_an_instance_whose_log_starts_at_id_1_hides_nothing() -> None:
    source = FakeActivity({1: NOW - timedelta(days=1)})
    assert beyond_horizon(source, NOW - timedelta(days=20), None, NOW) is None  # type: ignore[arg-type]
