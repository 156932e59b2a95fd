"""The activity cursor: which activity ids a remote's runs have read, so that no late commit is skipped.

On PostgreSQL a Directus activity row is stamped with its transaction's start, and its id is taken when
the row is inserted, not when it commits: a bulk import that runs for a minute commits rows stamped a
minute ago, below ids that other writers committed meanwhile; and the Directus database's clock may be
minutes away from Airflow's. A time window alone misses both, whatever its overlap. So each run also
reads by id: every row above the previous run's :attr:`ActivityCursor.head`, and the *gaps* below it,
ids that were not visible when a run read (open transactions, or rolled-back ones), until they appear or
:data:`LATE_COMMIT_LIMIT` has passed since they were first seen.

Gaps are found by counting: one ``aggregate[count]`` request tells whether a span of ids is complete,
and only an incomplete span is halved until its missing ids are pinned down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from directus_sync.directus.activity import iso_timestamp, parse_timestamp
from directus_sync.directus.hook import DirectusHook

log = logging.getLogger(__name__)

# How long a missing activity id is waited for: longer than any import transaction should run.
LATE_COMMIT_LIMIT = timedelta(hours=1)
# How far back unlicensed Directus shows activity (its core licence's activity_historical_timeframe).
UNLICENSED_HORIZON = timedelta(days=30)
# At most this many gap spans are kept; beyond, neighbours are merged (and the ids between re-read).
MAX_GAPS = 64


class Gap(BaseModel):
    """Activity ids ``low`` to ``high`` (inclusive) not visible since ``since``."""

    low: int
    high: int
    since: datetime


class ActivityCursor(BaseModel):
    """Every activity id up to ``head`` of the ``source`` connection has been read, except those in ``gaps``."""

    head: int
    gaps: list[Gap] = []
    source: str | None = None

    @classmethod
    def restore(cls, kept: Mapping[str, Any] | None) -> ActivityCursor | None:
        """The cursor a run kept in the ledger (its JSON form), or ``None`` when it kept none."""
        return cls.model_validate(kept) if kept else None


@dataclass(frozen=True)
class CursorStep:
    """What a run reads by id (inclusive spans), and the cursor to keep once the run succeeded."""

    spans: list[tuple[int, int]]
    cursor: ActivityCursor


def advance(source: DirectusHook, previous: ActivityCursor, now: datetime) -> CursorStep:
    """The id spans a run reads after ``previous``, and where the next run starts.

    The run reads every id above the previous head up to the instance's head now, and every earlier
    gap. Ids of that span not visible now become gaps of the next cursor; a gap waited for longer than
    :data:`LATE_COMMIT_LIMIT` is read this one last time and then given up.
    """
    head = max(source.activity_head(), previous.head)
    spans = [(g.low, g.high) for g in previous.gaps]
    gaps: list[Gap] = []
    for gap in previous.gaps:
        if now - gap.since <= LATE_COMMIT_LIMIT:
            gaps += find_gaps(source, gap.low, gap.high, gap.since)
        else:
            log.warning("Activity ids %d to %d of the source stayed invisible for %s (a transaction rolled back, or "
                        "activity hidden from the sync user); read once more, then no longer waited for",
                        gap.low, gap.high, LATE_COMMIT_LIMIT)
    if head > previous.head:
        spans.append((previous.head + 1, head))
        gaps += find_gaps(source, previous.head + 1, head, now)
    gaps = coarsened(gaps)
    if gaps:
        log.info("Activity ids not visible yet (open transactions): %s; later runs read them when they commit",
                 ", ".join(f"{g.low}-{g.high}" for g in gaps))
    return CursorStep(sorted(spans), ActivityCursor(head=head, gaps=gaps, source=source.directus_conn_id))


def start(source: DirectusHook, now: datetime) -> ActivityCursor:
    """The cursor of a run that has none yet (a first copy), taken before it reads anything.

    Items committed before the copy reads them are copied as they are; a transaction still open holds
    ids below the head that are not visible yet: the gaps among the ids of the last
    :data:`LATE_COMMIT_LIMIT` are waited for like any other.
    """
    head = source.activity_head()
    recent = source.last_activity_before(iso_timestamp(now - LATE_COMMIT_LIMIT))
    gaps = find_gaps(source, recent + 1, head, now) if head > recent else []
    return ActivityCursor(head=head, gaps=coarsened(gaps), source=source.directus_conn_id)


def beyond_horizon(
    source: DirectusHook, since: datetime | None, previous: ActivityCursor | None, now: datetime
) -> str | None:
    """Why the activity a run must read (after ``previous``, or else from ``since``) is not all visible any
    more, or ``None``.

    Directus shows activity only back to a horizon (30 days on an unlicensed instance; admins may prune
    it too). Rows older than the oldest one it shows are gone for the API, so a run that must read them
    has to compare every item instead. With a cursor, ids tell exactly; without one (a backfill, a first
    incremental run), time is all there is, and a quiet instance may look like a hidden one: that costs a
    full comparison, never a change.
    """
    oldest = source.oldest_activity()
    if previous is not None:
        if source.activity_head() < previous.head:
            return (f"the source's activity ids went back below {previous.head}, the last run's head "
                    "(was its database restored or replaced?)")
        if oldest is not None and previous.head + 1 < oldest[0]:
            return (f"the source no longer shows activity ids {previous.head + 1} to {oldest[0] - 1}, read since "
                    f"the last successful run (its oldest visible row is from {oldest[1]})")
        return None
    if since is None:
        return None
    if oldest is None:
        return (f"the source shows no activity at all and the window starts at {iso_timestamp(since)}"
                if since < now - UNLICENSED_HORIZON else None)
    oldest_id, oldest_at = oldest
    # Rows are hidden by age: any visible row stamped before the window starts means none of it is hidden.
    if oldest_id > 1 and since < parse_timestamp(oldest_at) and not source.last_activity_before(iso_timestamp(since)):
        return f"the window starts at {iso_timestamp(since)}, before the oldest activity the source shows ({oldest_at})"
    return None


def find_gaps(source: DirectusHook, low: int, high: int, since: datetime) -> list[Gap]:
    """The spans of ids in ``[low, high]`` with no visible activity row, as few requests as it takes."""
    gaps: list[Gap] = []
    todo = [(low, high)]
    while todo:
        lo, hi = todo.pop()
        seen = source.activity_count(lo, hi)
        if seen >= hi - lo + 1:
            continue
        if seen == 0 or lo == hi or len(gaps) + len(todo) >= MAX_GAPS:
            gaps.append(Gap(low=lo, high=hi, since=since))
            continue
        middle = (lo + hi) // 2
        todo += [(middle + 1, hi), (lo, middle)]
    return _merged(gaps)


def coarsened(gaps: list[Gap], limit: int = MAX_GAPS) -> list[Gap]:
    """At most ``limit`` gaps: the closest neighbours are merged (their ids in between are re-read, which
    is harmless), and a merged gap is waited for from the earliest of its parts."""
    gaps = _merged(gaps)
    while len(gaps) > limit:
        i = min(range(len(gaps) - 1), key=lambda n: gaps[n + 1].low - gaps[n].high)
        gaps[i:i + 2] = [Gap(low=gaps[i].low, high=gaps[i + 1].high, since=min(gaps[i].since, gaps[i + 1].since))]
    return gaps


def _merged(gaps: list[Gap]) -> list[Gap]:
    merged: list[Gap] = []
    for gap in sorted(gaps, key=lambda g: g.low):
        if merged and merged[-1].high + 1 == gap.low and merged[-1].since == gap.since:
            merged[-1] = Gap(low=merged[-1].low, high=gap.high, since=gap.since)
        else:
            merged.append(gap)
    return merged
