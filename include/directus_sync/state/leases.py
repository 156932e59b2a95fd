"""Which run may write a remote now: one lease per written instance, in ``directus_sync_leases``.

``max_active_runs=1`` keeps one DAG's runs apart, but a remote's sync DAG and its reconcile DAG, or the
DAGs of two rows writing the same remote (A->B and C->B), would otherwise write it at the same time, and
a reconcile's prune could delete an item the other run had just copied. So every run that writes a remote
first takes the lease on its connection id, renews it while it works and gives it back when recorded.

Expiry uses the database's clock, never a worker's: workers' clocks may differ, the database is one. A
lease nobody renewed for ``ttl`` (its worker died) may be taken over; its old holder then fails its next
task instead of writing. The SQL is portable (PostgreSQL and SQLite): an INSERT that may hit the primary
key, then a conditional UPDATE whose row count says who won.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from directus_sync.state.tables import leases

log = logging.getLogger(__name__)

# The renewer of the lease this process holds now (one writing task at a time per process).
_active: _Renewer | None = None

TTL_ENV = "DIRECTUS_SYNC_LEASE_TTL_SECONDS"
DEFAULT_TTL = timedelta(minutes=10)
POLL_SECONDS = 3.0
# A waiting run says who holds the lease at most this often, so a long wait does not flood its log.
WAIT_LOG_SECONDS = 60.0


class LeaseLost(RuntimeError):
    """Another run holds the lease this run needs to write: writing now could undo that run's work."""


@dataclass(frozen=True)
class Holder:
    """A DAG run; every task (and every retry) of the run is the same holder."""

    dag_id: str
    run_id: str

    def __str__(self) -> str:
        return f"run {self.run_id!r} of DAG {self.dag_id!r}"


@dataclass(frozen=True)
class LeaseState:
    """A row of the lease table, with the database's time when it was read."""

    holder: Holder
    acquired_at: datetime
    expires_at: datetime
    now: datetime

    @property
    def free(self) -> bool:
        return self.expires_at <= self.now


def default_ttl() -> timedelta:
    seconds = os.environ.get(TTL_ENV)
    return timedelta(seconds=float(seconds)) if seconds else DEFAULT_TTL


def db_now(conn: Connection) -> datetime:
    """The database's current time, in UTC (SQLite answers naive UTC, to the second)."""
    value = conn.execute(sa.select(sa.func.current_timestamp(type_=sa.DateTime()))).scalar_one()
    return _utc(value)


def acquire(engine: Engine, target: str, holder: Holder, ttl: timedelta | None = None) -> bool:
    """Take the lease on ``target`` for ``holder``; ``False`` when another holder has it and it has not expired.

    Taking it again as its holder (a retried task) renews it and keeps the first ``acquired_at``.
    """
    ttl = ttl or default_ttl()
    with engine.begin() as conn:
        now = db_now(conn)
    try:
        with engine.begin() as conn:
            conn.execute(leases.insert().values(
                target=target, holder_dag_id=holder.dag_id, holder_run_id=holder.run_id,
                acquired_at=now, renewed_at=now, expires_at=now + ttl))
        return True
    except sa.exc.IntegrityError:
        pass  # the row exists: whoever updates it under the condition below wins
    mine = _held_by(holder)
    with engine.begin() as conn:
        now = db_now(conn)
        taken = conn.execute(leases.update().where(leases.c.target == target, sa.or_(mine, leases.c.expires_at <= now))
                             .values(holder_dag_id=holder.dag_id, holder_run_id=holder.run_id,
                                     acquired_at=sa.case((mine, leases.c.acquired_at), else_=now),
                                     renewed_at=now, expires_at=now + ttl)).rowcount
    return bool(taken)


def renew(engine: Engine, target: str, holder: Holder, ttl: timedelta | None = None) -> None:
    """Extend ``holder``'s lease by ``ttl`` from now; raise :class:`LeaseLost` when another run has taken it."""
    ttl = ttl or default_ttl()
    with engine.begin() as conn:
        now = db_now(conn)
        renewed = conn.execute(leases.update().where(leases.c.target == target, _held_by(holder))
                               .values(renewed_at=now, expires_at=now + ttl)).rowcount
    if not renewed:
        raise LeaseLost(_lost_message(target, holder, state(engine, target)))


def release(engine: Engine, target: str, holder: Holder) -> bool:
    """Give the lease back, if ``holder`` still has it; the row stays, expired, naming its last holder.

    Keeping the last holder lets a later task of a run that was taken over see that it was.
    """
    with engine.begin() as conn:
        now = db_now(conn)
        released = conn.execute(leases.update().where(leases.c.target == target, _held_by(holder))
                                .values(expires_at=now)).rowcount
    if released:
        log.info("directus-sync lease on %s released by %s at %s", target, holder, now.isoformat())
    return bool(released)


def state(engine: Engine, target: str) -> LeaseState | None:
    """Who holds (or last held) the lease on ``target``; ``None`` when nobody ever took it."""
    with engine.connect() as conn:
        now = db_now(conn)
        row = conn.execute(sa.select(leases).where(leases.c.target == target)).first()
    if row is None:
        return None
    return LeaseState(Holder(row.holder_dag_id, row.holder_run_id), _utc(row.acquired_at), _utc(row.expires_at), now)


def wait_for(engine: Engine, target: str, holder: Holder, ttl: timedelta | None = None,
             poll: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep) -> None:
    """Take the lease, waiting while another run holds it (saying who, at most once a minute)."""
    last_logged: float | None = None
    while not acquire(engine, target, holder, ttl):
        if last_logged is None or time.monotonic() - last_logged >= WAIT_LOG_SECONDS:
            current = state(engine, target)
            if current is not None:
                log.info("directus-sync lease on %s: waiting; %s holds it since %s (until %s unless renewed)",
                         target, current.holder, current.acquired_at.isoformat(), current.expires_at.isoformat())
            last_logged = time.monotonic()
        sleep(poll)


def resume(engine: Engine, target: str, holder: Holder, ttl: timedelta | None = None) -> None:
    """For a later task of the holding run: renew the lease, or take it when nobody has held it yet.

    Fails when another run holds it or held it since (this run's plan may be stale against its writes).
    """
    current = state(engine, target)
    if current is None and acquire(engine, target, holder, ttl):
        return
    renew(engine, target, holder, ttl)


@contextlib.contextmanager
def hold(engine: Engine, target: str, holder: Holder, ttl: timedelta | None = None, wait: bool = True,
         poll: float = POLL_SECONDS) -> Iterator[None]:
    """Hold the lease on ``target`` while the body runs, renewing it every ``ttl / 3`` in a thread.

    With ``wait`` (the run's first writing task) it waits for the lease; without, the run must hold it
    already (see :func:`resume`). The lease is not released on exit: the run's last task does that. A
    renewal that finds the lease taken over fails the block when the body ends.
    """
    ttl = ttl or default_ttl()
    _check_table(engine)
    if wait:
        wait_for(engine, target, holder, ttl, poll)
    else:
        resume(engine, target, holder, ttl)
    current = state(engine, target)
    log.info("directus-sync lease on %s %s by %s at %s", target, "taken" if wait else "still held", holder,
             current.now.isoformat() if current else "?")
    renewer = _Renewer(engine, target, holder, ttl)
    renewer.start()
    global _active
    _active = renewer
    try:
        yield
    finally:
        _active = None
        renewer.stop()
    if renewer.lost is not None:
        raise renewer.lost


def check_held() -> None:
    """Raise :class:`LeaseLost` when the lease this process holds (see :func:`hold`) was taken over, or
    has not been renewed for half its time to live (the database is out of reach: another run may take
    it soon). Writers call it before each request; outside :func:`hold` it does nothing."""
    renewer = _active
    if renewer is None:
        return
    if renewer.lost is not None:
        raise renewer.lost
    stale = time.monotonic() - renewer.renewed >= renewer.ttl.total_seconds() / 2
    if stale:
        raise LeaseLost(f"{renewer.holder} could not renew its lease on {renewer.target} for "
                        f"{renewer.ttl.total_seconds() / 2:.0f} s (the database of the remote-sources table is "
                        "out of reach); it stops writing before another run may take the lease. Clear the run "
                        "(from extract_changes) to sync again.")


class _Renewer(threading.Thread):
    """Renews a lease every ``ttl / 3`` until stopped; remembers a takeover instead of raising in a thread."""

    def __init__(self, engine: Engine, target: str, holder: Holder, ttl: timedelta) -> None:
        super().__init__(name=f"lease-{target}", daemon=True)
        self.engine, self.target, self.holder, self.ttl = engine, target, holder, ttl
        self.lost: LeaseLost | None = None
        self.renewed = time.monotonic()  # the lease was just taken or renewed
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.ttl.total_seconds() / 3):
            try:
                renew(self.engine, self.target, self.holder, self.ttl)
                self.renewed = time.monotonic()
            except LeaseLost as exc:
                log.error("%s", exc)
                self.lost = exc
                return
            except Exception as exc:  # the database may be back before the lease expires
                log.warning("directus-sync lease on %s: renewal failed, trying again: %s", self.target, exc)

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _check_table(engine: Engine) -> None:
    """A database upgraded from a version without leases fails here, saying how to fix it."""
    if not sa.inspect(engine).has_table(leases.name):
        raise LeaseLost(f"the table {leases.name} is missing in the database of the remote-sources table: run "
                        "`directus-sync db upgrade` (safe to repeat) so that runs can take leases")


def _held_by(holder: Holder) -> sa.ColumnElement[bool]:
    return sa.and_(leases.c.holder_dag_id == holder.dag_id, leases.c.holder_run_id == holder.run_id)


def _lost_message(target: str, holder: Holder, current: LeaseState | None) -> str:
    if current is None:
        return f"the lease on {target} is gone from directus_sync_leases; {holder} does not hold it"
    held = "holds it" if not current.free else "held it"
    return (f"{holder} no longer holds the lease on {target}: {current.holder} {held} since "
            f"{current.acquired_at.isoformat()}, so this run stops instead of writing over its work (its "
            f"lease expired without renewal: a worker stalled or died). Clear the whole run (from "
            f"extract_changes) to sync again.")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
