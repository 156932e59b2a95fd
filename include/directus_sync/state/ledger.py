"""The run ledger: one row per sync run and collection, beside the remote-sources table; and the dead
letters (items a remote refused, retried by later runs) and conflicts (which side won an item) of runs.

Each run's ``record_run`` task writes its rows (window, counts, duration, outcome, Airflow run id); the CLI
(``directus-sync runs``) and the status page read them. Writing is idempotent per run: a cleared and
re-run Airflow run replaces its rows instead of adding more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from directus_sync.state.tables import conflicts, dead_letters, json_value, runs

log = logging.getLogger(__name__)


class RunStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"


@dataclass(frozen=True)
class CollectionCounts:
    """What one run did to one collection on the remote."""

    collection: str
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    conflicts: int = 0
    dead_letters: int = 0

    @property
    def written(self) -> int:
        return self.created + self.updated + self.deleted


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a remote's DAG."""

    remote: str
    dag_id: str
    run_id: str
    status: RunStatus
    finished_at: datetime
    run_type: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    full_copy: bool = False
    full_reason: str | None = None
    # The activity cursor the next run reads on from (successful runs only; see engine/cursor.py).
    cursor: dict[str, Any] | None = None
    started_at: datetime | None = None
    error: str | None = None
    collections: Sequence[CollectionCounts] = field(default_factory=list)

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.started_at else None


def record(engine: Engine, run: RunRecord) -> int:
    """Write ``run``'s rows, replacing any rows an earlier attempt of the same Airflow run wrote."""
    duration = run.duration
    shared = {"remote": run.remote, "dag_id": run.dag_id, "run_id": run.run_id, "run_type": run.run_type,
              "window_start": run.window_start, "window_end": run.window_end, "full_copy": run.full_copy,
              "full_reason": run.full_reason and run.full_reason[:1000],
              # SQL NULL, not JSON null: the next run looks for the latest row that kept a cursor.
              "activity_cursor": run.cursor if run.cursor is not None else sa.null(),
              "status": run.status.value, "error": (run.error or None) and run.error[:4000],
              "started_at": run.started_at, "finished_at": run.finished_at,
              "duration_seconds": duration.total_seconds() if duration else None}
    rows = [{**shared, "collection": c.collection, "created": c.created, "updated": c.updated,
             "deleted": c.deleted, "skipped": c.skipped, "conflicts": c.conflicts, "dead_letters": c.dead_letters}
            for c in run.collections]
    with engine.begin() as conn:
        conn.execute(runs.delete().where(runs.c.dag_id == run.dag_id, runs.c.run_id == run.run_id))
        if rows:
            conn.execute(runs.insert(), rows)
    return len(rows)


def recent_runs(engine: Engine, remote: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The ledger rows of the last ``limit`` runs (of ``remote``, or of every remote), newest first."""
    latest = (sa.select(runs.c.dag_id, runs.c.run_id, sa.func.max(runs.c.finished_at).label("finished"))
              .group_by(runs.c.dag_id, runs.c.run_id))
    if remote is not None:
        latest = latest.where(runs.c.remote == remote)
    chosen = latest.order_by(sa.desc("finished")).limit(limit).subquery()
    query = (sa.select(runs).join(chosen, sa.and_(runs.c.dag_id == chosen.c.dag_id, runs.c.run_id == chosen.c.run_id))
             .order_by(runs.c.finished_at.desc(), runs.c.id))
    with engine.connect() as conn:
        return [_aware(dict(row._mapping)) for row in conn.execute(query)]


def last_synced(engine: Engine) -> dict[str, datetime]:
    """Per remote, the end of the latest window a run synced successfully."""
    query = (sa.select(runs.c.remote, sa.func.max(runs.c.window_end))
             .where(runs.c.status == RunStatus.SUCCESS.value).group_by(runs.c.remote))
    with engine.connect() as conn:
        return {remote: _utc(end) for remote, end in conn.execute(query) if end is not None}


def last_window_end(engine: Engine, remote: str) -> datetime | None:
    """The end of ``remote``'s latest successful window: every change before it has reached the remote.

    Runs of the sync DAG (scheduled, manual, event-triggered) and of the reconcile DAG count, whatever
    their DAG: a reconcile's full comparison as of T covers everything before T. Backfills do not: they
    replay a stated period, not everything up to its end.
    """
    query = (sa.select(sa.func.max(runs.c.window_end))
             .where(runs.c.remote == remote, runs.c.status == RunStatus.SUCCESS.value,
                    sa.or_(runs.c.run_type.is_(None), runs.c.run_type != "backfill")))
    with engine.connect() as conn:
        end = conn.execute(query).scalar()
    return _utc(end) if end is not None else None


def last_cursor(engine: Engine, remote: str) -> dict[str, Any] | None:
    """The activity cursor (its JSON form) of ``remote``'s latest successful run that kept one."""
    query = (sa.select(runs.c.activity_cursor)
             .where(runs.c.remote == remote, runs.c.status == RunStatus.SUCCESS.value,
                    runs.c.activity_cursor.is_not(None))
             .order_by(runs.c.finished_at.desc(), runs.c.id.desc()).limit(1))
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    value = json_value(value)  # SQLite without JSON decoding returns the text
    if value and not isinstance(value, dict):
        log.warning("Remote %s: the kept activity cursor is not a JSON object; reading by time only", remote)
        return None
    return value or None


def lag(synced_until: datetime | None, now: datetime | None = None) -> timedelta | None:
    """How far the remote is behind: from the end of its last synced window to ``now``."""
    if synced_until is None:
        return None
    return max((now or datetime.now(UTC)) - _utc(synced_until), timedelta(0))


def open_dead_letters(engine: Engine, remote: str) -> dict[str, set[str]]:
    """The keys of ``remote`` still in the dead-letter table, per collection."""
    query = sa.select(dead_letters.c.collection, dead_letters.c.item_key).where(dead_letters.c.remote == remote)
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for collection, key in conn.execute(query):
            found.setdefault(collection, set()).add(key)
    return found


def record_dead_letters(engine: Engine, remote: str, run_id: str, failures: Iterable[Any]) -> int:
    """Insert each failure, or bump ``attempts`` and ``last_seen`` of the one already there."""
    now = datetime.now(UTC)
    count = 0
    with engine.begin() as conn:
        for failure in failures:
            where = sa.and_(dead_letters.c.remote == remote, dead_letters.c.collection == failure.collection,
                            dead_letters.c.item_key == failure.key)
            values = {"action": failure.action, "error": failure.error[:4000], "run_id": run_id, "last_seen": now}
            updated = conn.execute(dead_letters.update().where(where).values(
                attempts=dead_letters.c.attempts + 1, **values)).rowcount
            if not updated:
                conn.execute(dead_letters.insert().values(remote=remote, collection=failure.collection,
                                                          item_key=failure.key, first_seen=now, attempts=1,
                                                          **values))
            count += 1
    return count


def clear_dead_letters(engine: Engine, remote: str, collection: str, keys: Iterable[str]) -> int:
    keys = list(keys)
    if not keys:
        return 0
    with engine.begin() as conn:
        return int(conn.execute(dead_letters.delete().where(
            dead_letters.c.remote == remote, dead_letters.c.collection == collection,
            dead_letters.c.item_key.in_(keys))).rowcount)


def record_conflicts(engine: Engine, remote: str, run_id: str, policy: str, records: Iterable[Any]) -> int:
    now = datetime.now(UTC)
    rows = [{"remote": remote, "collection": r.collection, "item_key": r.key, "source_changed_at": r.source_at,
             "remote_changed_at": r.remote_at, "policy": policy, "winner": r.winner, "run_id": run_id,
             "recorded_at": now} for r in records]
    if rows:
        with engine.begin() as conn:
            conn.execute(conflicts.insert(), rows)
    return len(rows)


def dead_letters_of_run(engine: Engine, remote: str, run_id: str) -> dict[str, int]:
    """Items the remote refused in ``run_id`` and still refuses, per collection."""
    query = (sa.select(dead_letters.c.collection, sa.func.count())
             .where(dead_letters.c.remote == remote, dead_letters.c.run_id == run_id)
             .group_by(dead_letters.c.collection))
    with engine.connect() as conn:
        return {collection: int(n) for collection, n in conn.execute(query)}


def open_issue_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Per remote, the open dead letters and the conflicts recorded in the last 7 days."""
    since = datetime.now(UTC) - timedelta(days=7)
    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for remote, n in conn.execute(sa.select(dead_letters.c.remote, sa.func.count())
                                      .group_by(dead_letters.c.remote)):
            counts.setdefault(remote, {})["dead_letters"] = int(n)
        for remote, n in conn.execute(sa.select(conflicts.c.remote, sa.func.count())
                                      .where(conflicts.c.recorded_at >= since).group_by(conflicts.c.remote)):
            counts.setdefault(remote, {})["conflicts"] = int(n)
    return counts


def group_runs(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Ledger rows grouped by run, keeping their order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["dag_id"], row["run_id"]), []).append(row)
    return list(grouped.values())


def _aware(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands back naive datetimes; every time in the ledger is UTC."""
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
