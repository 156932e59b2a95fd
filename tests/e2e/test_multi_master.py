"""Two-way pairs and meshes converge by the documented rule: the value made last, wherever it was made.

The first tests run the generated DAGs through real Airflow (``airflow dags test``). The randomised mesh
runs the same steps the DAG's tasks run (extract, plan, apply, the run ledger) in-process, as a scheduler
orders them: each pair's window starts where its previous one ended. Every read and write goes to real
Directus instances and the package's real tables; only Airflow's scheduling is left out, since dozens
of runs per example would otherwise take minutes each.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import ObjectStoragePath
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from devtools.devserver import DirectusInstance
from directus_sync.airflow import steps
from directus_sync.config import RemoteSource
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.schema import check_schema
from directus_sync.engine.apply import Applier
from directus_sync.engine.cursor import ActivityCursor
from directus_sync.engine.extract import compute_window, extract
from directus_sync.engine.plan import plan
from directus_sync.state import ledger, tables

from .harness import ARTIFACTS, Airflow, activity_count, conn_id, create_uuid_collection
from .test_sync_dags import add_remote, run_ok

FIELDS = ["title", "views"]



def view(instance: DirectusInstance, collection: str) -> dict[str, dict[str, Any]]:
    rows = instance.api("GET", f"/items/{collection}", params={"limit": -1, "fields": "id,title,views"})
    return {row["id"]: {"title": row["title"], "views": row["views"]} for row in rows}


def put(instance: DirectusInstance, collection: str, key: str, title: str, views: int) -> None:
    """Create or update ``key`` with both synced fields, as an editor would."""
    if key in view(instance, collection):
        instance.api("PATCH", f"/items/{collection}/{key}", json={"title": title, "views": views})
    else:
        instance.api("POST", f"/items/{collection}", json={"id": key, "title": title, "views": views})


def conflicts_of(airflow: Airflow, remote: str) -> list[dict[str, Any]]:
    with airflow.engine().connect() as conn:
        rows = conn.execute(sa.select(tables.conflicts).where(tables.conflicts.c.remote == remote))
        return [dict(r._mapping) for r in rows]


@pytest.fixture
def uuid_collection(instances: dict[str, DirectusInstance], collection: str) -> str:
    for instance in instances.values():
        create_uuid_collection(instance, collection)
    return collection


def test_a_value_passed_on_by_another_sync_is_not_overwritten_by_an_older_edit(
        instances: dict[str, DirectusInstance], airflow: Airflow, uuid_collection: str) -> None:
    a, b, c = instances["a"], instances["b"], instances["c"]
    col = uuid_collection
    dags = {f"{s}{r}": add_remote(airflow, f"hop_{s}{r}_{col}", instances[s], instances[r], col, FIELDS)
            for s in "abc" for r in "abc" if s != r}
    key = str(uuid.uuid4())
    put(a, col, key, "first", 1)
    for dag_id in dags.values():
        run_ok(airflow, dag_id)
    assert view(b, col)[key] == view(c, col)[key] == {"title": "first", "views": 1}

    put(a, col, key, "older edit on a", 2)
    put(c, col, key, "newer edit on c", 3)
    run_ok(airflow, dags["cb"])
    run_ok(airflow, dags["ab"])  # B's latest change is the sync's: only its origin says it is C's, and newer
    assert view(b, col)[key] == {"title": "newer edit on c", "views": 3}
    assert [(r["item_key"], r["winner"]) for r in conflicts_of(airflow, f"hop_ab_{col}")] == [(key, "remote")]

    for dag_id in dags.values():  # one round: B passes C's value back to A, A's older one stays out
        run_ok(airflow, dag_id)
    assert view(a, col) == view(b, col) == view(c, col)
    assert view(a, col)[key] == {"title": "newer edit on c", "views": 3}


def test_a_value_travels_on_through_an_instance_between_two_others(
        instances: dict[str, DirectusInstance], airflow: Airflow, uuid_collection: str) -> None:
    # A hub and two spokes (A<->B<->C, no A-C pair): an edit on A reaches C through B, and back.
    a, b, c = instances["a"], instances["b"], instances["c"]
    col = uuid_collection
    pairs = ["ab", "ba", "bc", "cb"]
    dags = [add_remote(airflow, f"chain_{p}_{col}", instances[p[0]], instances[p[1]], col, FIELDS) for p in pairs]
    for dag_id in dags:
        run_ok(airflow, dag_id)
    key = str(uuid.uuid4())
    put(a, col, key, "made on a", 1)
    run_ok(airflow, dags[0])
    run_ok(airflow, dags[2])
    assert view(c, col) == {key: {"title": "made on a", "views": 1}}
    put(c, col, key, "edited on c", 2)
    run_ok(airflow, dags[3])
    run_ok(airflow, dags[1])
    assert view(a, col) == view(b, col) == view(c, col) == {key: {"title": "edited on c", "views": 2}}
    counts = [activity_count(i, col) for i in (a, b, c)]
    for dag_id in dags:
        run_ok(airflow, dag_id)
    assert [activity_count(i, col) for i in (a, b, c)] == counts  # quiet: nothing echoes


def test_full_resync_in_a_two_way_pair_keeps_the_other_sides_newer_edits(
        instances: dict[str, DirectusInstance], airflow: Airflow, uuid_collection: str) -> None:
    a, b = instances["a"], instances["b"]
    col = uuid_collection
    ab = add_remote(airflow, f"fr_ab_{col}", a, b, col, FIELDS)
    ba = add_remote(airflow, f"fr_ba_{col}", b, a, col, FIELDS)
    keys = [str(uuid.uuid4()) for _ in range(3)]
    for n, key in enumerate(keys):
        put(a, col, key, f"item {n}", n)
    run_ok(airflow, ab)
    run_ok(airflow, ba)

    put(a, col, keys[0], "older edit on a", 10)
    put(a, col, keys[1], "only edit, on a", 11)
    put(b, col, keys[0], "newer edit on b", 20)
    b.api("DELETE", f"/items/{col}/{keys[2]}")
    run_ok(airflow, ab, full_resync=True)
    assert view(b, col) == {keys[0]: {"title": "newer edit on b", "views": 20},
                            keys[1]: {"title": "only edit, on a", "views": 11}}
    assert sorted((r["item_key"], r["winner"]) for r in conflicts_of(airflow, f"fr_ab_{col}")) == sorted(
        [(keys[0], "remote"), (keys[2], "remote")])
    run_ok(airflow, ba)
    assert view(a, col) == view(b, col)


@pytest.mark.parametrize("delete_first", [True, False])
def test_a_delete_and_an_update_of_one_item_resolve_the_same_in_both_directions(
        instances: dict[str, DirectusInstance], airflow: Airflow, uuid_collection: str, delete_first: bool) -> None:
    a, b = instances["a"], instances["b"]
    col = uuid_collection
    ab = add_remote(airflow, f"du_ab_{col}", a, b, col, FIELDS)
    ba = add_remote(airflow, f"du_ba_{col}", b, a, col, FIELDS)
    key = str(uuid.uuid4())
    put(a, col, key, "shared", 1)
    run_ok(airflow, ab)
    run_ok(airflow, ba)

    edits = [lambda: a.api("DELETE", f"/items/{col}/{key}"), lambda: put(b, col, key, "updated on b", 2)]
    for edit in edits if delete_first else reversed(edits):
        edit()
    for dag_id in (ab, ba, ab, ba):
        run_ok(airflow, dag_id)
    expected = {key: {"title": "updated on b", "views": 2}} if delete_first else {}
    assert view(a, col) == view(b, col) == expected  # the later of the two wins, both ways


# -- the randomised mesh ---------------------------------------------------------------------------------


@dataclass
class Pair:
    """One directed pair, run as a scheduler runs its DAG: each window starts where the last one ended."""

    remote: RemoteSource
    engine: sa.engine.Engine
    staging: Path
    last_end: datetime | None = None
    runs: int = 0

    def run(self) -> int:
        """One run: extract, plan, apply, record; returns how many items it wrote."""
        remote, engine = self.remote, self.engine
        self.runs += 1
        end = datetime.now(UTC)
        window = compute_window(self.last_end, end, self.last_end, remote.overlap)
        source, target = DirectusHook(remote.source_conn_id), DirectusHook(remote.remote_conn_id)
        folder = ObjectStoragePath(f"file://{self.staging}/{remote.name}/{self.runs}")
        manifest = extract(source, remote, window, folder, ledger.open_dead_letters(engine, remote.name),
                           previous=ActivityCursor.restore(ledger.last_cursor(engine, remote.name)))
        shapes = check_schema(remote.sync_schema, source, target, full=manifest.full)
        guard = steps.conflict_guard(remote, source, target, engine)
        sync_plan = plan(target, manifest, shapes, remote.batch_size, guard)
        run_id = f"mesh_{self.runs}"
        ledger.record_conflicts(engine, remote.name, run_id, remote.conflict_policy.value, guard.conflicts)
        written = 0
        for action in ("delete", "update", "create"):
            for planned in sync_plan.collections:
                recorder = steps.origin_recorder(engine, remote, planned)
                outcome = Applier(target, planned, recorder=recorder).run(action, remote.batch_size)  # type: ignore[arg-type]
                assert not outcome.failures, outcome.failures
                written += outcome.written
        ledger.record(engine, ledger.RunRecord(
            remote=remote.name, dag_id=remote.dag_id, run_id=run_id, status=ledger.RunStatus.SUCCESS,
            finished_at=datetime.now(UTC), window_start=window.start, window_end=end, full_copy=manifest.full,
            cursor=manifest.cursor.model_dump(mode="json") if manifest.cursor else None))
        self.last_end = end
        return written


@dataclass
class Mesh:
    """Three instances, all six directed pairs, and the last edit made to each key (the expected winner)."""

    instances: dict[str, DirectusInstance]
    collection: str
    pairs: dict[str, Pair]
    keys: list[str] = field(default_factory=list)
    expected: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    operations: int = 0

    def edit(self, who: str, action: str, key: str, title: str, views: int) -> None:
        instance = self.instances[who]
        present = key in view(instance, self.collection)
        if action == "delete":
            if not present:
                return
            instance.api("DELETE", f"/items/{self.collection}/{key}")
            self.expected[key] = None
        else:
            put(instance, self.collection, key, title, views)
            self.expected[key] = {"title": title, "views": views}
        self.operations += 1

    def quiet_rounds(self, order: random.Random) -> int:
        """Run every pair, in a random order per round, until a round writes nothing; return the rounds."""
        for rounds in itertools.count(1):
            names = list(self.pairs)
            order.shuffle(names)
            if sum(self.pairs[name].run() for name in names) == 0:
                return rounds
            assert rounds < 6, "the mesh still writes after 5 rounds"
        raise AssertionError("unreachable")


@pytest.fixture
def mesh(instances: dict[str, DirectusInstance], airflow: Airflow, uuid_collection: str, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Mesh]:
    for name, connection in airflow.connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(connection))
    engine = airflow.engine()
    pairs = {}
    for s, r in itertools.permutations("abc", 2):
        remote = RemoteSource.model_validate({
            "name": f"rnd_{s}{r}_{uuid_collection}"[:63], "status": "published",
            "source_conn_id": conn_id(instances[s]), "remote_conn_id": conn_id(instances[r]),
            "schema": [{"name": uuid_collection, "fields": FIELDS}], "overlap_seconds": 5})
        pairs[f"{s}{r}"] = Pair(remote, engine, tmp_path)
    yield Mesh(instances, uuid_collection, pairs)
    engine.dispose()


EDITS = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["put", "put", "delete", "run"]),
                           st.integers(min_value=0, max_value=4), st.sampled_from("xyz"),
                           st.sampled_from(list(itertools.permutations("abc", 2)))),
                 min_size=6, max_size=14)


# One seed in CI (about 4 minutes); seed 14 passed too (stop 13) and is worth a run after changing conflicts.
@pytest.mark.parametrize("seed_value", [2026])
def test_a_mesh_of_three_instances_converges_on_the_last_edit_under_random_concurrent_edits(
        mesh: Mesh, seed_value: int) -> None:
    for pair in mesh.pairs.values():
        pair.run()  # every pair's first run (a full copy of an empty collection)
    order = random.Random(seed_value)
    examples: list[int] = []

    @settings(max_examples=10, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @seed(seed_value)
    @given(edits=EDITS)
    def converges(edits: list[tuple[str, str, int, str, tuple[str, str]]]) -> None:
        keys = [str(uuid.uuid4()) for _ in range(5)]  # fresh keys: each example is judged on its own
        for who, action, slot, text, pair in edits:
            if action == "run":
                mesh.pairs["".join(pair)].run()
            else:
                mesh.edit(who, action, keys[slot], f"{text} by {who}", slot + len(mesh.expected))
        mesh.quiet_rounds(order)
        views = [view(i, mesh.collection) for i in mesh.instances.values()]
        assert views[0] == views[1] == views[2]
        for key in keys:
            assert views[0].get(key) == mesh.expected.get(key), key
        counts = [activity_count(i, mesh.collection) for i in mesh.instances.values()]
        assert mesh.quiet_rounds(order) == 1  # a quiet round writes nothing...
        assert [activity_count(i, mesh.collection) for i in mesh.instances.values()] == counts  # ...at all
        examples.append(len(edits))

    converges()
    runs = sum(p.runs for p in mesh.pairs.values())
    figures = f"seed {seed_value}: {len(examples)} examples, {mesh.operations} edits, {runs} runs\n"
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "mesh-figures.txt").open("a") as out:  # the figures the closing note quotes
        out.write(figures)
    assert len(examples) >= 10
