"""Origins order values by when and where they were made, and the package remembers those it wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from directus_sync.engine import origins
from directus_sync.engine.origins import Origin, newer
from directus_sync.state import tables

T = "2026-11-26T12:00:00.000Z"


def engine_at(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/origins.db")
    tables.migrate(engine)
    return engine


def test_later_wins_and_equal_times_go_to_the_instance_named_last() -> None:
    assert Origin.of_change("2026-11-26T12:00:01Z", "a") > Origin.of_change(T, "z")
    assert Origin.of_change(T, "b") > Origin.of_change(T, "a")
    assert newer(None, Origin.of_change(T, "a")) == Origin.of_change(T, "a")
    assert newer(Origin.of_change(T, "b"), Origin.of_change(T, "a")) == Origin.of_change(T, "b")


def test_a_recorded_origin_replaces_the_one_before_and_is_kept_per_instance(tmp_path: Path) -> None:
    engine = engine_at(tmp_path)
    origins.record(engine, "b", "articles", {"1": Origin.of_change(T, "a"), "2": Origin.of_change(T, "a")})
    origins.record(engine, "b", "articles", {"1": Origin.of_change("2026-11-26T13:00:00Z", "c")})
    origins.record(engine, "c", "articles", {"1": Origin.of_change(T, "a")})
    assert origins.recorded(engine, "b", "articles", ["1", "2", "3"]) == {
        "1": Origin(datetime(2026, 11, 26, 13, tzinfo=UTC), "c"), "2": Origin.of_change(T, "a")}


def test_recorded_since_tells_whether_any_written_value_is_that_new(tmp_path: Path) -> None:
    engine = engine_at(tmp_path)
    origins.record(engine, "b", "articles", {"1": Origin.of_change(T, "a")})
    assert origins.recorded_since(engine, "b", "articles", datetime(2026, 11, 26, 12, tzinfo=UTC))
    assert not origins.recorded_since(engine, "b", "articles", datetime(2026, 11, 26, 12, 0, 1, tzinfo=UTC))
    assert not origins.recorded_since(engine, "b", "pages", datetime(2026, 1, 1, tzinfo=UTC))
