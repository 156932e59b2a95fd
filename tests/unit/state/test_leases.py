"""The lease on a remote: one run writes it at a time; expiry is judged by the database's clock."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from directus_sync.state import leases, tables
from directus_sync.state.leases import Holder, LeaseLost

TARGET = "directus_b"
SYNC = Holder("directus_sync__a_to_b", "manual__1")
RECONCILE = Holder("directus_sync__a_to_b__reconcile", "scheduled__1")
TTL = timedelta(minutes=10)


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'table.db'}")
    tables.migrate(engine)
    return engine


def set_expiry(engine: sa.engine.Engine, seconds_from_db_now: int) -> None:
    """Move the lease's expiry relative to the database's clock, as time passing there would."""
    with engine.begin() as conn:
        now = leases.db_now(conn)
        conn.execute(tables.leases.update().values(expires_at=now + timedelta(seconds=seconds_from_db_now)))


def test_one_holder_at_a_time_and_the_holder_may_take_it_again(engine: sa.engine.Engine) -> None:
    assert leases.acquire(engine, TARGET, SYNC, TTL)
    first = leases.state(engine, TARGET)
    assert not leases.acquire(engine, TARGET, RECONCILE, TTL)
    assert leases.acquire(engine, TARGET, SYNC, TTL)  # a retried task of the same run
    assert leases.acquire(engine, "directus_c", RECONCILE, TTL)  # another remote has a lease of its own
    current = leases.state(engine, TARGET)
    assert current is not None and first is not None
    assert current.holder == SYNC and current.acquired_at == first.acquired_at and not current.free


def test_release_frees_the_lease_only_for_its_holder(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, SYNC, TTL)
    assert not leases.release(engine, TARGET, RECONCILE)
    assert not leases.acquire(engine, TARGET, RECONCILE, TTL)
    assert leases.release(engine, TARGET, SYNC)
    assert leases.acquire(engine, TARGET, RECONCILE, TTL)


def test_renew_extends_by_the_ttl_from_the_database_clock(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, SYNC, timedelta(seconds=30))
    leases.renew(engine, TARGET, SYNC, TTL)
    current = leases.state(engine, TARGET)
    assert current is not None
    assert timedelta(minutes=9) < current.expires_at - current.now <= TTL


def test_an_expired_lease_is_taken_over_and_its_old_holder_fails_on_renew(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, SYNC, TTL)
    set_expiry(engine, -1)  # nobody renewed it: its worker died
    assert leases.acquire(engine, TARGET, RECONCILE, TTL)
    with pytest.raises(LeaseLost, match=r"no longer holds the lease on directus_b: run 'scheduled__1' of DAG "
                                        r"'directus_sync__a_to_b__reconcile' holds it since"):
        leases.renew(engine, TARGET, SYNC, TTL)
    # Still after the new holder released it: the old run's plan may be stale against what it wrote.
    leases.release(engine, TARGET, RECONCILE)
    with pytest.raises(LeaseLost, match="held it since"):
        leases.hold(engine, TARGET, SYNC, TTL, wait=False).__enter__()


def test_expiry_is_judged_by_the_database_clock_not_the_workers(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, SYNC, timedelta(seconds=1))
    assert not leases.acquire(engine, TARGET, RECONCILE, TTL)  # within its second, by the database's clock
    time.sleep(2.1)  # SQLite's CURRENT_TIMESTAMP counts whole seconds
    assert leases.acquire(engine, TARGET, RECONCILE, TTL)


def test_an_expired_lease_nobody_took_may_still_be_renewed_by_its_holder(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, SYNC, TTL)
    set_expiry(engine, -5)
    leases.renew(engine, TARGET, SYNC, TTL)
    assert leases.state(engine, TARGET).holder == SYNC  # type: ignore[union-attr]


def test_a_later_task_takes_the_lease_when_nobody_ever_held_it(engine: sa.engine.Engine) -> None:
    with leases.hold(engine, TARGET, SYNC, TTL, wait=False):
        assert leases.state(engine, TARGET).holder == SYNC  # type: ignore[union-attr]


def test_a_later_task_fails_while_another_run_holds_the_lease(engine: sa.engine.Engine) -> None:
    leases.acquire(engine, TARGET, RECONCILE, TTL)
    with pytest.raises(LeaseLost, match="'directus_sync__a_to_b__reconcile' holds it since"), \
            leases.hold(engine, TARGET, SYNC, TTL, wait=False):
        pytest.fail("the body must not run")


def test_another_holder_waits_and_says_who_holds_the_lease(engine: sa.engine.Engine,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    leases.acquire(engine, TARGET, SYNC, TTL)
    entered = threading.Event()

    def reconcile() -> None:
        with leases.hold(engine, TARGET, RECONCILE, TTL, poll=0.05):
            entered.set()

    waiter = threading.Thread(target=reconcile)
    waiter.start()
    time.sleep(0.5)
    assert not entered.is_set()
    leases.release(engine, TARGET, SYNC)
    waiter.join(timeout=10)
    assert entered.is_set()
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1  # at most once a minute, however often it polls
    assert "run 'manual__1' of DAG 'directus_sync__a_to_b' holds it since" in waits[0]


def test_hold_renews_in_the_background_and_fails_the_block_when_taken_over(engine: sa.engine.Engine) -> None:
    short = timedelta(seconds=0.3)  # renewed every 0.1 s
    with pytest.raises(LeaseLost, match="no longer holds"), leases.hold(engine, TARGET, SYNC, short):
        time.sleep(0.35)
        assert leases.state(engine, TARGET).holder == SYNC  # type: ignore[union-attr]
        with engine.begin() as conn:  # another run takes it over, as after a stall longer than the TTL
            conn.execute(tables.leases.update().values(holder_dag_id=RECONCILE.dag_id,
                                                      holder_run_id=RECONCILE.run_id))
        time.sleep(0.35)


def test_a_database_without_the_lease_table_says_how_to_add_it(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with pytest.raises(LeaseLost, match="directus-sync db upgrade"), leases.hold(engine, TARGET, SYNC, TTL):
        pytest.fail("the body must not run")


def test_a_writer_stops_as_soon_as_its_lease_is_taken_over(engine: sa.engine.Engine) -> None:
    short = timedelta(seconds=0.3)
    with pytest.raises(LeaseLost), leases.hold(engine, TARGET, SYNC, short):
        leases.check_held()  # held: writing may go on
        with engine.begin() as conn:
            conn.execute(tables.leases.update().values(holder_dag_id=RECONCILE.dag_id,
                                                      holder_run_id=RECONCILE.run_id))
        time.sleep(0.25)  # the renewer notices
        with pytest.raises(LeaseLost, match="no longer holds"):
            leases.check_held()
        raise LeaseLost("the writer stopped")


def test_a_writer_stops_when_the_lease_could_not_be_renewed_for_half_its_time(engine: sa.engine.Engine,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with leases.hold(engine, TARGET, SYNC, timedelta(seconds=0.4)):
        def unreachable(*args: object) -> None:
            raise sa.exc.OperationalError("renew", {}, Exception("database down"))
        monkeypatch.setattr(leases, "renew", unreachable)
        time.sleep(0.3)
        with pytest.raises(LeaseLost, match="could not renew"):
            leases.check_held()
        monkeypatch.undo()


def test_outside_a_held_lease_writers_are_not_checked() -> None:
    leases.check_held()
