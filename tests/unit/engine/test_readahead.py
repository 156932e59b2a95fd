"""Reading ahead keeps the order of batches, bounds what is in flight, and raises a fetch's error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from directus_sync.engine.readahead import read_ahead


def test_results_come_back_in_order_beside_their_batch() -> None:
    def slow_for_early(batch: int) -> int:
        time.sleep(0.01 * (5 - batch))  # later batches finish first
        return batch * 10

    assert list(read_ahead(slow_for_early, range(5), ahead=3)) == [(b, b * 10) for b in range(5)]


def test_no_more_than_ahead_fetches_run_at_once_and_the_source_is_read_lazily() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    pulled: list[int] = []

    def fetch(batch: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return batch

    def source() -> Iterator[int]:
        for batch in range(20):
            pulled.append(batch)
            yield batch

    results = read_ahead(fetch, source(), ahead=2)
    first = next(results)
    assert first == (0, 0)
    assert len(pulled) <= 3  # the batch handed out and two read ahead
    assert [b for b, _ in results] == list(range(1, 20))
    assert peak <= 2


def test_a_failing_fetch_raises_in_the_callers_loop() -> None:
    def fetch(batch: int) -> int:
        if batch == 2:
            raise RuntimeError("remote down")
        return batch

    seen = []
    with pytest.raises(RuntimeError, match="remote down"):
        for batch, _ in read_ahead(fetch, range(10), ahead=2):
            seen.append(batch)
    assert seen == [0, 1]


def test_ahead_of_one_is_sequential() -> None:
    assert list(read_ahead(lambda b: -b, [1, 2, 3], ahead=1)) == [(1, -1), (2, -2), (3, -3)]
