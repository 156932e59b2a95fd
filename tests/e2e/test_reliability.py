"""Faults, poison items, conflicts and reconcile, against real instances (loopback only, bounded)."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.devserver import DirectusInstance, PostgresDatabase
from directus_sync.directus.provision import provision
from directus_sync.state import tables
from tests.support import rows_of

from .faultproxy import FAULTS, FaultProxy
from .harness import AIRFLOW, Airflow, conn_id, create_collection, items, sync_token
from .test_sync_dags import SYNCED, add_remote, run_fails, run_ok, seed, synced_view


def open_letters(airflow: Airflow, remote: str) -> list[dict[str, object]]:
    return rows_of(airflow.engine(), tables.dead_letters, remote)


def test_a_remote_that_stops_mid_apply_converges_on_the_next_run(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, c = instances["a"], instances["c"]
    create_collection(a, collection)
    create_collection(c, collection)
    keys = seed(a, collection, 3000)
    dag_id = add_remote(airflow, f"crash_{collection}", a, c, collection, batch_size=50, http_retries=1)
    run = subprocess.Popen([AIRFLOW, "dags", "test", dag_id, datetime.now(UTC).isoformat()], env=airflow.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            count = c.api("GET", f"/items/{collection}", params={"aggregate[count]": "id"})[0]["count"]["id"]
            if int(count) > 0:
                break
            time.sleep(0.05)
        c.stop()
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
        c.start()
    assert run.returncode != 0, "the remote stopped in the middle, so that run must fail:\n" + output[-3000:]
    partial = len(items(c, collection, fields="id"))
    assert 0 < partial < len(keys)

    run_ok(airflow, dag_id)
    on_c = items(c, collection, fields="id")
    assert sorted(on_c) == sorted(keys)  # none lost, none twice
    assert synced_view(c, collection) == synced_view(a, collection)


def test_the_sync_rides_out_503_429_slow_and_dropped_connections(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 400)
    with FaultProxy(b.url, every=3) as proxy:
        airflow.connections["directus_flaky"] = {"conn_type": "http", "host": proxy.url, "password": sync_token(b)}
        dag_id = airflow.add_remote(name=f"flaky_{collection}", source_conn_id=conn_id(a),
                                    remote_conn_id="directus_flaky", batch_size=40,
                                    schema=[{"name": collection, "fields": SYNCED}])
        started = time.monotonic()
        run_ok(airflow, dag_id)
        a.api("PATCH", f"/items/{collection}", json={"keys": keys[:150], "data": {"title": "after faults"}})
        a.api("DELETE", f"/items/{collection}", json=keys[-100:])
        run_ok(airflow, dag_id)
        elapsed = time.monotonic() - started
    assert synced_view(b, collection) == synced_view(a, collection)
    assert set(proxy.injected) == set(FAULTS), proxy.injected
    assert elapsed < 300
    print(f"faults injected: {dict(proxy.injected)} over {proxy.requests} requests, {elapsed:.0f} s")


def test_poison_items_go_to_dead_letters_and_everything_else_arrives(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    b.api("POST", "/collections", json={"collection": collection, "meta": {}, "schema": {}, "fields": [
        {"field": "id", "type": "integer", "schema": {"is_primary_key": True, "has_auto_increment": True}},
        {"field": "title", "type": "string", "meta": {}, "schema": {"max_length": 12}},
        {"field": "views", "type": "integer", "meta": {}, "schema": {}}]})
    provision(b.url, b.admin_token, [collection], token=sync_token(b))
    good = seed(a, collection, 30)
    poison = [i["id"] for i in a.api("POST", f"/items/{collection}", json=[
        {"title": "a title far too long for the remote", "views": n} for n in range(3)])]
    name = f"poison_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection, batch_size=500)

    output = run_fails(airflow, dag_id)
    assert "the remote refused 3 items (now in the dead-letter table)" in output
    on_b = items(b, collection)
    assert sorted(on_b) == sorted(good)
    letters = open_letters(airflow, name)
    assert sorted(int(str(row["item_key"])) for row in letters) == sorted(poison)
    assert all(row["action"] == "create" and row["attempts"] == 1 for row in letters)

    a.api("PATCH", f"/items/{collection}", json={"keys": poison[:2], "data": {"title": "short"}})
    output = run_fails(airflow, dag_id)  # one is still too long: retried first, still refused
    letters = open_letters(airflow, name)
    assert [int(str(row["item_key"])) for row in letters] == [poison[2]]
    assert letters[0]["attempts"] == 2
    assert set(poison[:2]) <= set(items(b, collection))

    a.api("PATCH", f"/items/{collection}/{poison[2]}", json={"title": "ok now"})
    run_ok(airflow, dag_id)
    assert open_letters(airflow, name) == []
    assert synced_view(b, collection) == synced_view(a, collection)


def test_a_remote_with_a_small_body_limit_gets_every_item_in_requests_it_accepts(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, c = instances["a"], instances["c"]
    create_collection(a, collection)
    create_collection(c, collection)
    a.api("POST", f"/items/{collection}", json=[{"title": f"{n} " + "t" * 200, "views": n} for n in range(600)])
    dag_id = add_remote(airflow, f"small_body_{collection}", a, c, collection, batch_size=500)
    assert c.launch is not None
    command, env, cwd = c.launch
    c.launch = (command, {**env, "MAX_PAYLOAD_SIZE": "24kb"}, cwd)  # a 500-item batch is about 120 kB
    c.stop()
    c.start()
    try:
        output = run_ok(airflow, dag_id)
    finally:
        c.launch = (command, env, cwd)
        c.stop()
        c.start()
    assert "as too large; sending at most" in output
    assert synced_view(c, collection) == synced_view(a, collection)
    assert open_letters(airflow, f"small_body_{collection}") == []


def test_last_writer_wins_in_both_directions_and_conflicts_are_recorded(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 4)
    a_to_b = add_remote(airflow, f"lww_ab_{collection}", a, b, collection)
    b_to_a = add_remote(airflow, f"lww_ba_{collection}", b, a, collection)
    run_ok(airflow, a_to_b)
    run_ok(airflow, b_to_a)

    a.api("PATCH", f"/items/{collection}/1", json={"title": "a first"})
    a.api("DELETE", f"/items/{collection}/3")
    time.sleep(0.05)
    b.api("PATCH", f"/items/{collection}/1", json={"title": "b later"})
    b.api("PATCH", f"/items/{collection}/3", json={"title": "b edits after a deleted"})
    a.api("POST", f"/items/{collection}", json={"id": 50, "title": "made on a", "views": 1})
    time.sleep(0.05)
    b.api("POST", f"/items/{collection}", json={"id": 50, "title": "made on b, later", "views": 2})
    for _ in range(2):
        run_ok(airflow, a_to_b)
        run_ok(airflow, b_to_a)
    assert synced_view(a, collection) == synced_view(b, collection)
    on_a = items(a, collection)
    assert on_a[1]["title"] == "b later"
    assert on_a[3]["title"] == "b edits after a deleted"
    assert on_a[50]["title"] == "made on b, later"
    recorded = rows_of(airflow.engine(), tables.conflicts, f"lww_ab_{collection}")
    assert {(r["item_key"], r["winner"]) for r in recorded} >= {("1", "remote"), ("3", "remote"), ("50", "remote")}


def test_reconcile_repairs_drift_and_prunes_only_when_asked(
        instances: dict[str, DirectusInstance], databases: dict[str, PostgresDatabase], airflow: Airflow,
        collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 6)
    name = f"mirror_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection, reconcile_schedule="@daily", reconcile_prune=True)
    run_ok(airflow, dag_id)
    # Drift that bypasses Directus's API: no activity is logged for it.
    with sa.create_engine(databases["b"].url).begin() as conn:
        conn.execute(sa.text(f'UPDATE "{collection}" SET title = \'drifted\' WHERE id = 2'))
        conn.execute(sa.text(f'DELETE FROM "{collection}" WHERE id = 3'))
        conn.execute(sa.text(f'INSERT INTO "{collection}" (id, title) VALUES (99, \'stray\')'))

    output = run_ok(airflow, dag_id, full_resync=True)
    on_b = items(b, collection)
    assert on_b[2]["title"] == "title 1" and 3 in on_b
    assert 99 in on_b, "no prune unless asked"
    assert "1 to create, 1 to update, 0 to delete, 4 already equal" in output

    output = run_ok(airflow, f"{dag_id}__reconcile")  # the reconcile DAG prunes, as its row says
    assert 99 not in items(b, collection)
    assert synced_view(b, collection) == synced_view(a, collection)
    assert "1 remote items are not on the source and will be pruned" in output


def test_a_missing_collection_is_refused_before_anything_is_written(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    seed(a, collection, 3)
    dag_id = add_remote(airflow, f"nocoll_{collection}", a, b, collection)
    output = run_fails(airflow, dag_id)
    assert f"collection '{collection}' does not exist on 'directus_b'" in output


OPS = st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["create", "update", "delete", "sync"]),
                         st.integers(min_value=1, max_value=8), st.text("xyz", min_size=1, max_size=4)),
               min_size=4, max_size=12)


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_random_two_way_workloads_converge(instances: dict[str, DirectusInstance], airflow: Airflow,
                                           ops: list[tuple[str, str, int, str]]) -> None:
    a, b = instances["a"], instances["b"]
    collection = f"rnd_{uuid.uuid4().hex[:8]}"  # a replayed example needs a collection of its own too
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 4)
    dags = {"a": add_remote(airflow, f"{collection}_ab", a, b, collection),
            "b": add_remote(airflow, f"{collection}_ba", b, a, collection)}
    side = {"a": a, "b": b}
    run_ok(airflow, dags["a"])
    run_ok(airflow, dags["b"])
    for who, op, key, text in ops:
        instance = side[who]
        present = set(items(instance, collection, fields="id"))
        if op == "sync":
            run_ok(airflow, dags[who])
        elif op == "create" and key not in present:
            instance.api("POST", f"/items/{collection}", json={"id": key, "title": text, "views": key})
        elif op == "update" and key in present:
            instance.api("PATCH", f"/items/{collection}/{key}", json={"title": text})
        elif op == "delete" and key in present:
            instance.api("DELETE", f"/items/{collection}/{key}")
    for _ in range(2):
        run_ok(airflow, dags["a"])
        run_ok(airflow, dags["b"])
    assert synced_view(a, collection) == synced_view(b, collection)
