"""The window a run reads: its data interval, widened back to the last success and by the overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from directus_sync.extract import compute_window

T = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)
OVERLAP = timedelta(seconds=60)


def test_the_first_run_copies_everything() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=None, overlap=OVERLAP)
    assert window.full
    assert window.end == T + FIVE


def test_full_resync_copies_everything_even_after_successes() -> None:
    assert compute_window(T, T + FIVE, T, OVERLAP, full_resync=True).full


def test_a_run_after_a_success_reads_its_interval_plus_the_overlap() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=T, overlap=OVERLAP)
    assert not window.full
    assert (window.start, window.end) == (T - OVERLAP, T + FIVE)


def test_after_failed_runs_the_window_reaches_back_to_the_last_success() -> None:
    last_success = T - timedelta(hours=3)
    window = compute_window(T, T + FIVE, prev_success_end=last_success, overlap=OVERLAP)
    assert window.start == last_success - OVERLAP


def test_a_replayed_old_interval_is_not_narrowed_by_a_later_success() -> None:
    window = compute_window(T, T + FIVE, prev_success_end=T + timedelta(hours=1), overlap=OVERLAP)
    assert window.start == T - OVERLAP


def test_a_run_without_a_data_interval_starts_at_the_last_success() -> None:
    window = compute_window(None, T, prev_success_end=T - FIVE, overlap=timedelta(0))
    assert window.start == T - FIVE
