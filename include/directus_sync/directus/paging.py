"""Reading within an instance's limits: pages no larger than its ``QUERY_LIMIT_MAX`` nor than a byte budget,
and filters on keys short enough for a URL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

# Directus's IN filter travels in the query string; keep URLs well under common 8 KB limits.
MAX_FILTER_CHARS = 6_000
# The first read of a collection asks for this many items at most: their size is not known yet.
FIRST_PAGE_ITEMS = 16
# How much larger one read of a collection may be than the one before it.
PAGE_GROWTH = 4
# How many pages an offset read steps back to find its previous page again before it reads on.
MAX_STEPS_BACK = 8


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
