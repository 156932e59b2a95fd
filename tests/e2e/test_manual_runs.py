"""Manual runs under a real ``airflow standalone``: each kind reads from the end of the last successful window
to now, never a full copy of a remote synced before.

In Airflow 3.3 a run triggered without a logical date (the UI, the REST API with ``logical_date: null``,
``airflow dags trigger``) has no data interval and no ``prev_data_interval_end_success``; one with a logical
date gets the last complete interval, and Airflow's previous success by logical date.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devtools.devserver import DirectusInstance, PostgresDatabase, free_port
from devtools.liveairflow import unpause_when_parsed, wait_for
from devtools.localairflow import Standalone
from directus_sync.state import ledger

from .conftest import RUN_TAG
from .harness import Airflow, create_collection
from .test_sync_dags import add_remote, seed, synced_view

OVERLAP = timedelta(seconds=60)
RUN_TIMEOUT = 300  # two cores shared with other suites; a run here takes 20-40 s


def test_every_kind_of_manual_run_syncs_the_edits_since_the_last_window(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 6)
    name = f"manual_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection, schedule="@daily")
    metadata_db = PostgresDatabase(f"directus_sync_e2e_{RUN_TAG}_manual_meta")
    metadata_db.recreate()
    af = Airflow(home=tmp_path / "airflow", table_db=airflow.table_db)
    af.connections.update(airflow.connections)
    af.extra_env.update({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.url,
                         "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    engine = airflow.engine()
    try:
        with af.standalone(port=free_port()) as server:
            unpause_when_parsed(server, dag_id)  # which queues the latest scheduled run: the first, a full copy
            [first] = wait_for(lambda: _runs(engine, name, 1), RUN_TIMEOUT, "the first (scheduled) run", every=2)
            assert first["status"] == "success" and first["full_copy"], first
            triggers = {
                "REST API without a logical date": lambda: _rest(server, dag_id, None),
                "REST API with a logical date": lambda: _rest(server, dag_id, datetime.now(UTC).isoformat()),
                "airflow dags trigger": lambda: _cli(af, dag_id),
            }
            previous, wrong = first, []
            for n, (kind, trigger) in enumerate(triggers.items()):
                a.api("PATCH", f"/items/{collection}", json={"keys": keys[n:n + 2], "data": {"title": kind}})
                started = datetime.now(UTC)
                run_id = trigger()
                state = wait_for(lambda r=run_id: _finished(server, dag_id, r), RUN_TIMEOUT, f"the run of {kind}",
                                 every=2)
                assert state == "success", f"{kind}: {server.log_path.read_text()[-5000:]}"
                [row, *_] = _runs(engine, name, n + 2) or [{}]
                assert row["run_id"] == run_id, kind
                assert synced_view(b, collection) == synced_view(a, collection), kind
                # Exactly the edits, read from the last window's end (less the overlap) to now. Every kind
                # is checked before the test fails, so that it names each kind that goes wrong.
                if ((row["full_copy"], row["updated"], row["created"], row["deleted"]) != (False, 2, 0, 0)
                        or row["window_start"] != previous["window_end"] - OVERLAP
                        or row["window_end"] < started - timedelta(seconds=5)):
                    wrong.append(f"{kind}: full_copy={row['full_copy']} ({row['full_reason']}), "
                                 f"{row['created']}/{row['updated']}/{row['deleted']} created/updated/deleted, "
                                 f"window {row['window_start']} to {row['window_end']}, "
                                 f"the previous one ended {previous['window_end']}")
                previous = row
            assert not wrong, "\n".join(wrong)
    finally:
        engine.dispose()
        metadata_db.drop()


def _runs(engine: sa.engine.Engine, name: str, count: int) -> list[dict[str, Any]] | None:
    """The ledger's row of each run of ``name`` (one collection), newest first, once there are ``count``."""
    rows = ledger.recent_runs(engine, name)
    return rows if len(rows) >= count else None


def _rest(server: Standalone, dag_id: str, logical_date: str | None) -> str:
    run = server.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": logical_date})
    return str(run["dag_run_id"])


def _cli(af: Airflow, dag_id: str) -> str:
    result = af.run("dags", "trigger", dag_id, "--output", "json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("[")))
    assert run["logical_date"] is None
    return str(run["dag_run_id"])


def _finished(server: Standalone, dag_id: str, run_id: str) -> str | None:
    state: str = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
    return state if state in ("success", "failed") else None
