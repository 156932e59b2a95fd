"""Reading ahead: a batch's remote reads run in threads while the previous batch is being staged.

Extraction and planning read Directus once or twice per batch and then do a little Python work on the
answer. Run one batch after another and each waits for a full round trip; with a few batches in flight
the instance answers the next ones while this process stages the current one. Results come back in
order, and at most ``ahead`` batches are read in advance of the one being staged, so memory stays
bounded by the batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Reads in flight per task: two keep a Directus instance busy without crowding out its other clients.
READ_AHEAD = 2


def read_ahead(fetch: Callable[[T], R], batches: Iterable[T], ahead: int = READ_AHEAD) -> Iterator[tuple[T, R]]:
    """``(batch, fetch(batch))`` for every batch, in order, with up to ``ahead`` fetches running at once.

    ``fetch`` runs in worker threads, so it must only do I/O and pure computation; whatever records
    results (files, counters) belongs to the caller's loop. An error of ``fetch`` is raised when its
    batch's turn comes; the batches not yet fetched are then abandoned.
    """
    if ahead <= 1:
        for batch in batches:
            yield batch, fetch(batch)
        return
    pending: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="directus-read") as pool:
        try:
            for batch in batches:
                pending.append((batch, pool.submit(fetch, batch)))
                if len(pending) > ahead:  # keep ``ahead`` fetches busy while the caller works
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
