"""On several machines: Celery workers that share nothing local, staging on object storage, configuration
read fresh by every worker.

The cluster (see cluster.py) runs each step of a sync DAG on the other worker than the step before, so
every hand-off between tasks crosses machines the way it does in a Celery or Kubernetes deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.devserver import DirectusInstance
from devtools.liveairflow import unpause_when_parsed, wait_for
from devtools.localairflow import Standalone

from .cluster import QUEUES, WORKERS, CeleryCluster
from .conftest import RUN_TAG
from .harness import Airflow, create_collection, items

SYNCED = ("title", "body", "views")


@pytest.fixture
def cluster(airflow: Airflow, tmp_path: Path) -> Iterator[tuple[CeleryCluster, Standalone]]:
    distributed = CeleryCluster(root=tmp_path / "cluster", tag=RUN_TAG, connections=dict(airflow.connections),
                                table_conn=airflow.connections["directus_sync_db"])
    with distributed.running() as api:
        yield distributed, api


def trigger(api: Standalone, dag_id: str) -> str:
    run_id: str = api.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]
    return run_id


def finished(api: Standalone, dag_id: str, run_id: str | None = None, timeout: float = 600) -> dict[str, Any]:
    """The run ``run_id`` (or the DAG's first run) once it has ended."""

    def ended() -> dict[str, Any] | None:
        runs = api.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        run = next((r for r in runs if run_id in (None, r["dag_run_id"])), None)
        return run if run and run["state"] in ("success", "failed") else None

    return wait_for(ended, timeout, f"a run of {dag_id} to end", every=2)


def hosts(api: Standalone, dag_id: str, run_id: str) -> dict[str, str | None]:
    """Where each task instance of the run ran: the host name of its worker."""
    answer = api.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti["hostname"] for ti in answer["task_instances"] if ti["state"] == "success"}


def assert_ran_on_both_workers(api: Standalone, dag_id: str, run_id: str) -> None:
    ran_on = hosts(api, dag_id, run_id)
    for task_id in ("extract_changes", "filter_schema", "apply_deletes", "apply_updates", "apply_creates",
                    "record_run"):
        expected = next(host for host, queue in WORKERS.items() if queue == QUEUES[task_id])
        assert ran_on.get(task_id) == expected, ran_on


def synced(instance: DirectusInstance, collection: str, fields: tuple[str, ...] = SYNCED) -> dict[int, tuple]:
    return {key: tuple(item[f] for f in fields) for key, item in items(instance, collection).items()}


def test_runs_handed_between_workers_converge_and_row_changes_reach_every_worker(
        airflow: Airflow, instances: dict[str, DirectusInstance], collection: str,
        cluster: tuple[CeleryCluster, Standalone]) -> None:
    distributed, api = cluster
    a, b, c = instances["a"], instances["b"], instances["c"]
    for instance in (a, b, c):
        create_collection(instance, collection)
    for n in range(1, 21):
        a.api("POST", f"/items/{collection}", json={"title": f"t{n}", "body": f"body {n}", "views": n})
    row = {"name": f"dist_{collection}", "source_conn_id": "directus_a", "remote_conn_id": "directus_b",
           "schedule": "@daily", "schema": [{"name": collection, "fields": list(SYNCED)}]}
    dag_id = airflow.add_remote(**row)

    # 1. The scheduler's first run copies everything, each step on the other worker than the step before.
    unpause_when_parsed(api, dag_id)
    first = finished(api, dag_id)
    assert first["state"] == "success", distributed.logs()
    assert_ran_on_both_workers(api, dag_id, first["dag_run_id"])
    assert synced(b, collection) == synced(a, collection)

    # 2. A field leaves the schema, and right away a run starts: every worker builds the DAG from the row
    # as it is now, whatever the dag-processor last serialized.
    before = synced(b, collection)
    airflow.add_remote(**{**row, "schema": [{"name": collection, "fields": ["title", "body"]}]})
    for n in (1, 2, 3):
        a.api("PATCH", f"/items/{collection}/{n}", json={"title": f"t{n} edited", "views": 1000 + n})
    created = a.api("POST", f"/items/{collection}", json={"title": "new", "body": "new body", "views": 7})["id"]
    a.api("DELETE", f"/items/{collection}/20")
    second = finished(api, dag_id, trigger(api, dag_id))
    assert second["state"] == "success", distributed.logs()
    assert_ran_on_both_workers(api, dag_id, second["dag_run_id"])
    on_b = synced(b, collection)
    assert [on_b[n] for n in (1, 2, 3)] == [(f"t{n} edited", f"body {n}", before[n][2]) for n in (1, 2, 3)]
    assert on_b[created] == ("new", "new body", None)  # views no longer syncs
    assert 20 not in on_b and len(on_b) == 20

    # 3. The row now writes to another instance: the next run writes there, not to the old remote.
    airflow.add_remote(**{**row, "remote_conn_id": "directus_c", "schema": [{"name": collection,
                                                                             "fields": ["title", "body"]}]})
    a.api("PATCH", f"/items/{collection}/4", json={"title": "only for c"})
    third = finished(api, dag_id, trigger(api, dag_id))
    assert third["state"] == "success", distributed.logs()
    assert synced(c, collection, ("title",))[4] == ("only for c",)
    assert synced(b, collection, ("title",))[4] == ("t4",)

    # Nothing was staged on a worker's own disk: it all went through object storage.
    for home in distributed.worker_homes():
        assert not (home / "directus_sync" / "staging").exists(), home


def test_local_staging_is_refused_under_celery_before_anything_is_read(
        airflow: Airflow, instances: dict[str, DirectusInstance], collection: str, tmp_path: Path) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):
        create_collection(instance, collection)
    a.api("POST", f"/items/{collection}", json={"title": "stays on a"})
    dag_id = airflow.add_remote(name=f"local_{collection}", source_conn_id="directus_a",
                                remote_conn_id="directus_b", schema=[{"name": collection, "fields": ["title"]}])
    celery = Airflow(airflow.home, airflow.table_db)
    celery.connections.update(airflow.connections)
    celery.extra_env.update({"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                             "DIRECTUS_SYNC_STAGING_URL": f"file://{tmp_path / 'staging'}"})
    result = celery.dags_test(dag_id)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "StagingNotShared" in output and "CeleryExecutor" in output and "DIRECTUS_SYNC_STAGING_URL" in output
    assert items(b, collection) == {}
    assert not (tmp_path / "staging").exists()
