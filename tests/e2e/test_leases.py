"""Runs that write one remote never overlap, through real Airflow (two `airflow dags test` at once)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from devtools.devserver import DirectusInstance
from directus_sync.state import ledger

from .faultproxy import FaultProxy
from .harness import AIRFLOW, Airflow, conn_id, create_collection, items, sync_token
from .test_sync_dags import SYNCED, run_ok, seed, synced_view

NO_FAULTS = 10**9
TIMEOUT = 600
LEASE_LINE = re.compile(r"lease on (?P<target>\S+) (?P<what>taken|released) by run '(?P<run>[^']+)' of DAG "
                        r"'(?P<dag>[^']+)' at (?P<at>\S+)")


class Gate:
    """Holds back the first request ``matches`` selects until :attr:`opened` is set; notes its arrival."""

    def __init__(self, matches: Callable[[str, str], bool]) -> None:
        self.matches = matches
        self.arrived = threading.Event()
        self.opened = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str) -> None:
        with self._lock:
            if self.arrived.is_set() or not self.matches(method, path):
                return
            self.arrived.set()
        self.opened.wait(TIMEOUT)


class Run:
    """One `airflow dags test` started in the background, its output in a file."""

    def __init__(self, airflow: Airflow, dag_id: str, log: Path) -> None:
        self.dag_id, self.log = dag_id, log
        with log.open("w") as handle:
            self.process = subprocess.Popen([AIRFLOW, "dags", "test", dag_id, datetime.now(UTC).isoformat()],
                                            env=airflow.env(), stdout=handle, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def waits(self) -> bool:
        return "waiting; run" in self.output

    def finish(self) -> str:
        try:
            self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        assert self.process.returncode == 0 and "state=success" in self.output, self.output[-6000:]
        return self.output


class Started(list["Run"]):
    def append(self, run: Run) -> Run:  # type: ignore[override]
        super().append(run)
        return run


@contextmanager
def stopped_at_exit(gate: Gate) -> Iterator[Started]:
    """The runs started in the block; on the way out the gate opens and any run still going is killed."""
    started = Started()
    try:
        yield started
    finally:
        gate.opened.set()
        for run in started:
            if run.process.poll() is None:
                run.process.kill()


def held(output: str, target: str) -> tuple[datetime, datetime]:
    """When the run whose log is ``output`` took the lease on ``target`` and gave it back (database time)."""
    times = {}
    for match in LEASE_LINE.finditer(output):
        if match["target"] == target:
            times.setdefault(match["what"], datetime.fromisoformat(match["at"]))
    assert set(times) == {"taken", "released"}, f"no lease lines for {target}:\n{output[-4000:]}"
    return times["taken"], times["released"]


def assert_apart(first: tuple[datetime, datetime], second: tuple[datetime, datetime]) -> None:
    assert first[1] <= second[0] or second[1] <= first[0], f"the runs held the lease together: {first} {second}"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


@contextmanager
def creating_items(instance: DirectusInstance, collection: str) -> Iterator[list[int]]:
    """Create an item on ``instance`` every half second while the block runs; yields their keys."""
    made: list[int] = []
    stop = threading.Event()

    def create() -> None:
        while not stop.wait(0.5):
            made.extend(seed(instance, collection, 1))

    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        stop.set()
        thread.join()


def test_a_pruning_reconcile_and_the_sync_of_its_remote_do_not_overlap_nor_prune_fresh_items(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 5)
    # Only the reconcile's prune lists the remote sorted by key: hold that listing back. The reconcile has
    # then listed the source's keys, and items created on the source now were not among them.
    listing = Gate(lambda method, path: method == "GET" and path.startswith(f"/items/{collection}?")
                   and "sort=id" in path)
    with FaultProxy(b.url, every=NO_FAULTS, before_forward=listing) as proxy:
        remote = f"directus_gated_{collection}"
        airflow.connections[remote] = {"conn_type": "http", "host": proxy.url, "password": sync_token(b)}
        dag_id = airflow.add_remote(name=f"lease_{collection}", source_conn_id=conn_id(a), remote_conn_id=remote,
                                    schema=[{"name": collection, "fields": SYNCED}],
                                    reconcile_schedule="@daily", reconcile_prune=True)
        run_ok(airflow, dag_id)  # the first copy
        with stopped_at_exit(listing) as started:
            reconcile = started.append(Run(airflow, f"{dag_id}__reconcile", tmp_path / "reconcile.log"))
            wait_until(listing.arrived.is_set, "the reconcile lists the remote's keys")
            with creating_items(a, collection) as made:
                fresh = seed(a, collection, 3)
                sync = started.append(Run(airflow, dag_id, tmp_path / "sync.log"))
                # Without the lease the sync copies the new items now, and the reconcile then prunes them.
                wait_until(lambda: sync.waits() or sync.process.poll() is not None,
                           "the sync waits for the lease or ends")
                listing.opened.set()
                reconcile_output, sync_output = reconcile.finish(), sync.finish()
        # Checked now: the next sync would bring pruned items back when the reconcile's cursor is the newer.
        assert set(fresh) <= set(items(b, collection, fields="id")), "the reconcile pruned items the sync copied"
        pruned = [r["deleted"] for r in ledger.recent_runs(airflow.engine(), f"lease_{collection}")
                  if r["dag_id"].endswith("__reconcile")]
        assert pruned == [0], "the remote had no item the source lacks"
        run_ok(airflow, dag_id)  # one more sync: everything created meanwhile arrives

    assert set(fresh + made) <= set(items(b, collection, fields="id")), "an item the source has is missing"
    assert synced_view(b, collection) == synced_view(a, collection)
    assert f"waiting; run '{reconcile_run_id(reconcile_output)}' of DAG '{dag_id}__reconcile' holds it" in sync_output
    assert_apart(held(reconcile_output, remote), held(sync_output, remote))


def reconcile_run_id(output: str) -> str:
    match = LEASE_LINE.search(output)
    assert match, output[-4000:]
    return match["run"]


def test_the_dags_of_two_rows_writing_one_remote_take_turns(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    a, b, c = instances["a"], instances["b"], instances["c"]
    for instance in (a, b, c):
        create_collection(instance, collection)
    seed(a, collection, 20)
    c.api("POST", f"/items/{collection}", json=[{"id": 1000 + n, "title": f"from c {n}", "views": n}
                                                for n in range(20)])
    # The first write to the remote waits until the other run waits for the lease.
    first_write = Gate(lambda method, path: method == "POST" and path.startswith(f"/items/{collection}"))
    with FaultProxy(b.url, every=NO_FAULTS, before_forward=first_write) as proxy:
        remote = f"directus_shared_{collection}"
        airflow.connections[remote] = {"conn_type": "http", "host": proxy.url, "password": sync_token(b)}
        dags = [airflow.add_remote(name=f"{source.name}b_{collection}", source_conn_id=conn_id(source),
                                   remote_conn_id=remote, schema=[{"name": collection, "fields": SYNCED}])
                for source in (a, c)]
        with stopped_at_exit(first_write) as runs:
            # One after the other: both DAGs announce the same Asset (the remote's collection), and two
            # `airflow dags test` registering it at once race on SQLite's unique key, not on the lease.
            runs.append(Run(airflow, dags[0], tmp_path / f"{dags[0]}.log"))
            wait_until(first_write.arrived.is_set, "one run writes")
            runs.append(Run(airflow, dags[1], tmp_path / f"{dags[1]}.log"))
            wait_until(lambda: runs[1].waits() or runs[1].process.poll() is not None,
                       "the other run waits for the lease or ends")
            first_write.opened.set()
            outputs = [r.finish() for r in runs]

    assert sum("waiting; run" in output for output in outputs) == 1, "exactly one run waited for the other"
    assert_apart(held(outputs[0], remote), held(outputs[1], remote))
    on_b = synced_view(b, collection)
    assert on_b == {**synced_view(a, collection), **synced_view(c, collection)}


def test_a_prune_spares_items_the_source_created_after_it_was_listed(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 5)
    listing = Gate(lambda method, path: method == "GET" and path.startswith(f"/items/{collection}?")
                   and "sort=id" in path)
    with FaultProxy(b.url, every=NO_FAULTS, before_forward=listing) as proxy:
        remote = f"directus_gated_{collection}"
        airflow.connections[remote] = {"conn_type": "http", "host": proxy.url, "password": sync_token(b)}
        mirror = airflow.add_remote(name=f"mirror_{collection}", source_conn_id=conn_id(a), remote_conn_id=remote,
                                    schema=[{"name": collection, "fields": SYNCED}],
                                    reconcile_schedule="@daily", reconcile_prune=True)
        # The same instance through another connection id: another lease, so nothing keeps this row's
        # runs apart from the mirror's. Only the prune's second look at the source protects its items.
        other = airflow.add_remote(name=f"other_{collection}", source_conn_id=conn_id(a),
                                   remote_conn_id=conn_id(b), schema=[{"name": collection, "fields": SYNCED}])
        run_ok(airflow, mirror)
        with stopped_at_exit(listing) as started:
            reconcile = started.append(Run(airflow, f"{mirror}__reconcile", tmp_path / "reconcile.log"))
            wait_until(listing.arrived.is_set, "the reconcile lists the remote's keys")
            fresh = seed(a, collection, 3)
            run_ok(airflow, other)  # copies the fresh items while the reconcile waits to list the remote
            listing.opened.set()
            output = reconcile.finish()

    assert set(fresh) <= set(items(b, collection, fields="id"))
    assert "3 remote items are not on the source and will be pruned" in output
    assert "3 of 3 pruned keys were spared: the source has them now" in output
    deleted = [r["deleted"] for r in ledger.recent_runs(airflow.engine(), f"mirror_{collection}")
               if r["dag_id"].endswith("__reconcile")]
    assert deleted == [0]
