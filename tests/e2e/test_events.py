"""Event-driven runs under a real ``airflow standalone`` (scheduler, triggerer, dag-processor, LocalExecutor).

Nobody triggers a run here: the activity trigger in the triggerer sees the edits on the source and Airflow
starts the runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devserver import DirectusInstance, PostgresDatabase, free_port
from devtools.liveairflow import dag_runs, settled_runs, unpause_when_parsed, wait_for
from devtools.localairflow import Standalone

from .conftest import RUN_TAG
from .harness import Airflow, conn_id, create_collection, items

POLL_SECONDS = 1
# Generous: two cores shared with other suites; a run here usually takes 10-20 s.
ARRIVAL_TIMEOUT = 180
# Long enough for an echo to be seen by the trigger, queued and started, were there one.
QUIET_SECONDS = 25


@pytest.fixture(scope="module")
def live(airflow: Airflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """``airflow standalone`` on a PostgreSQL metadata database, sharing the session's table and connections."""
    metadata_db = PostgresDatabase(f"directus_sync_e2e_{RUN_TAG}_events_meta")
    metadata_db.recreate()
    home = Path(tmp_path_factory.mktemp("standalone_home"))
    af = Airflow(home=home, table_db=airflow.table_db)
    af.connections.update(airflow.connections)
    af.extra_env.update({
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    })
    try:
        with af.standalone(port=free_port()) as server:
            yield server
    finally:
        metadata_db.drop()


def add_event_remote(airflow: Airflow, name: str, source: DirectusInstance, remote: DirectusInstance,
                     collection: str, trigger: str = "events") -> str:
    return airflow.add_remote(name=name, source_conn_id=conn_id(source), remote_conn_id=conn_id(remote),
                              schema=[{"name": collection, "fields": ["title", "views"]}], trigger=trigger,
                              event_poll_seconds=POLL_SECONDS, schedule="@hourly")


def written(live: Standalone, dag_id: str, run: dict[str, object]) -> dict[str, dict[str, int]]:
    """What a run's sync_changes task wrote, by action and collection (from its result, its XCom return value)."""
    entry = live.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/sync_changes/"
                            "xcomEntries/return_value")
    value = entry["value"]  # the stored JSON: decoded or not, depending on the metadata database
    synced = json.loads(value) if isinstance(value, str) else value
    return {step["action"]: step["written"] for step in synced["steps"] if step["step"] == "applied"}


def watching(live: Standalone, remote: str) -> None:
    """Wait until the triggerer runs the remote's activity trigger (it logs when it starts polling)."""
    wait_for(lambda: f"for remote {remote} from activity id" in live.log_path.read_text(errors="replace"),
             ARRIVAL_TIMEOUT, f"the activity trigger of {remote}", every=1)


def titles(instance: DirectusInstance, collection: str) -> dict[int, str]:
    return {key: item["title"] for key, item in items(instance, collection, "id,title").items()}


def arrives(instance: DirectusInstance, collection: str, expected: dict[int, str]) -> None:
    wait_for(lambda: titles(instance, collection) == expected, ARRIVAL_TIMEOUT,
             f"{expected} on {instance.name}", every=0.5)


def test_an_edit_arrives_on_the_remote_with_no_manual_trigger(
        instances: dict[str, DirectusInstance], airflow: Airflow, live: Standalone, collection: str) -> None:
    """``both``: the hourly schedule's first run and the event runs chain through one watermark."""
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    a.api("POST", f"/items/{collection}", json=[{"title": f"t{n}", "views": n} for n in range(5)])
    dag_id = add_event_remote(airflow, f"ev_{collection}", a, b, collection, trigger="both")
    unpause_when_parsed(live, dag_id)

    arrives(b, collection, titles(a, collection))  # the items created before: a full first copy
    before = settled_runs(live, dag_id, quiet=QUIET_SECONDS)
    key = next(iter(titles(a, collection)))
    edited = time.monotonic()
    a.api("PATCH", f"/items/{collection}/{key}", json={"title": "edited on a"})
    arrives(b, collection, titles(a, collection))
    print(f"edit arrived after {time.monotonic() - edited:.1f} s")

    runs = settled_runs(live, dag_id, quiet=QUIET_SECONDS)
    assert all(r["state"] == "success" for r in runs), runs
    assert {r["run_type"] for r in runs} <= {"asset_triggered", "scheduled"}, runs  # nobody triggered by hand
    new_runs = runs[len(before):]
    assert "asset_triggered" in {r["run_type"] for r in new_runs}, runs  # the edit's event started a run
    # Across the event run and a scheduled one (when the test crosses the hour), the edit is written once.
    totals = {action: sum(written(live, dag_id, r)[action][collection] for r in new_runs)
              for action in ("delete", "update", "create")}
    assert totals == {"delete": 0, "update": 1, "create": 0}, totals


def test_two_way_event_mode_does_not_echo(
        instances: dict[str, DirectusInstance], airflow: Airflow, live: Standalone, collection: str) -> None:
    """A->B and B->A both listen: the sync's writes on one side start no run of the other direction."""
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    a_to_b = add_event_remote(airflow, f"eva_{collection}", a, b, collection)
    b_to_a = add_event_remote(airflow, f"evb_{collection}", b, a, collection)
    unpause_when_parsed(live, a_to_b)
    unpause_when_parsed(live, b_to_a)
    # Both triggers must be polling before anything is written, or an echo could go unseen.
    watching(live, f"eva_{collection}")
    watching(live, f"evb_{collection}")

    a.api("POST", f"/items/{collection}", json=[{"title": f"t{n}", "views": n} for n in range(3)])
    arrives(b, collection, titles(a, collection))
    forward = settled_runs(live, a_to_b, quiet=QUIET_SECONDS)
    # B now holds items written by B's sync user only: B->A must not have seen anything to sync.
    assert dag_runs(live, b_to_a) == [], "B->A ran for the sync's own writes on B (echo)"

    key = next(iter(titles(b, collection)))
    b.api("PATCH", f"/items/{collection}/{key}", json={"title": "edited on b"})
    arrives(a, collection, titles(b, collection))
    backward = settled_runs(live, b_to_a, quiet=QUIET_SECONDS)
    assert len(backward) >= 1 and all(r["state"] == "success" for r in backward), backward
    # ...and B->A's write on A must not start A->B again.
    assert len(settled_runs(live, a_to_b, quiet=QUIET_SECONDS)) == len(forward), "A->B ran for B->A's writes"
    assert titles(a, collection) == titles(b, collection)
