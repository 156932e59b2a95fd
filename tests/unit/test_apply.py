"""Request batches are bounded by item count and by body size."""

from __future__ import annotations

from directus_sync.apply import request_batches
from directus_sync.hook import encode_json


def body_size(batch: list[dict[str, object]]) -> int:
    return len(encode_json(batch))


def test_batches_respect_the_count() -> None:
    batches = list(request_batches(({"id": n} for n in range(10)), max_count=4, max_bytes=10_000))
    assert [len(b) for b in batches] == [4, 4, 2]


def test_batches_respect_the_body_size() -> None:
    items = [{"id": n, "body": "x" * 300} for n in range(20)]
    batches = list(request_batches(items, max_count=100, max_bytes=1_000))
    assert sum(len(b) for b in batches) == 20
    assert all(body_size(b) <= 1_000 for b in batches)
    assert [item for b in batches for item in b] == items


def test_an_item_larger_than_the_limit_travels_alone() -> None:
    items = [{"id": 1}, {"id": 2, "body": "x" * 5_000}, {"id": 3}]
    assert [len(b) for b in request_batches(items, max_count=10, max_bytes=1_000)] == [1, 1, 1]


def test_multibyte_text_counts_in_bytes() -> None:
    items = [{"id": n, "t": "é" * 100} for n in range(10)]
    assert all(body_size(b) <= 1_000 for b in request_batches(items, max_count=100, max_bytes=1_000))
