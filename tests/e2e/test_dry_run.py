"""Dry runs (`directus-sync plan` and the `dry_run` DAG param) against real Directus and real Airflow:
they show what the next run writes, and write nothing."""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa

from devtools.devserver import DirectusInstance
from directus_sync.state import ledger, tables

from .harness import Airflow, activity_count, conn_id, create_collection, items, run_cli
from .test_sync_dags import add_remote, run_ok, seed

SUMMARY = re.compile(r"(?P<collection>\w+): (?P<creates>\d+) to create, (?P<updates>\d+) to update, "
                     r"(?P<deletes>\d+) to delete, (?P<prunes>\d+) to prune, \d+ already equal, "
                     r"(?P<conflicts>\d+) conflicts")


def summary_counts(output: str, collection: str) -> dict[str, int]:
    found = [m for m in SUMMARY.finditer(output) if m["collection"] == collection]
    assert found, output[-6000:]
    return {k: int(v) for k, v in found[-1].groupdict().items() if k != "collection"}


def written_state(airflow: Airflow, remote: DirectusInstance, name: str, collection: str) -> dict[str, Any]:
    """Everything a run may write: the remote's items and activity, and our tables' rows about this remote."""
    with airflow.engine().connect() as conn:
        def count(table: sa.Table, *where: Any) -> int:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())

        rows = {
            "runs": count(tables.runs, tables.runs.c.remote == name),
            "origins": count(tables.origins, tables.origins.c.instance == conn_id(remote),
                             tables.origins.c.collection == collection),
            "conflicts": count(tables.conflicts, tables.conflicts.c.remote == name),
            "dead_letters": count(tables.dead_letters, tables.dead_letters.c.remote == name),
            "lease": conn.execute(sa.select(tables.leases).where(
                tables.leases.c.target == conn_id(remote))).all(),
        }
    return {"items": items(remote, collection), "activity": activity_count(remote, collection), **rows}


def test_a_dry_run_writes_nothing_and_counts_what_the_next_run_writes(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 8)
    name = f"dry_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection)
    run_ok(airflow, dag_id)  # the first run: a full copy

    a.api("PATCH", f"/items/{collection}", json={"keys": keys[:2], "data": {"title": "edited"}})
    a.api("PATCH", f"/items/{collection}/{keys[2]}", json={"views": 1000})
    a.api("DELETE", f"/items/{collection}/{keys[-1]}")
    seed(a, collection, 3)
    a.api("PATCH", f"/items/{collection}/{keys[3]}", json={"title": "edited on the source"})
    time.sleep(1.5)  # then someone edits the same item on the remote: a conflict the remote's edit wins
    b.api("PATCH", f"/items/{collection}/{keys[3]}", json={"title": "edited on the remote"})
    before = written_state(airflow, b, name, collection)

    cli = run_cli(airflow, "plan", name)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    planned = summary_counts(cli.stdout, collection)
    assert planned == {"creates": 3, "updates": 3, "deletes": 1, "prunes": 0, "conflicts": 1}, cli.stdout
    assert "fields to update: title (2), views (1)" in cli.stdout
    assert f"conflict: key {keys[3]}: source changed" in cli.stdout and "winner remote" in cli.stdout
    assert "edited on the" not in cli.stdout  # field names, never values
    assert written_state(airflow, b, name, collection) == before

    dag = airflow.dags_test(dag_id, conf={"dry_run": True})
    output = dag.stdout + dag.stderr
    assert dag.returncode == 0 and "state=success" in output, output[-6000:]
    assert summary_counts(output, collection) == planned
    assert "dry run: nothing recorded" in output
    assert written_state(airflow, b, name, collection) == before

    run_ok(airflow, dag_id)  # the real run writes what both dry runs announced
    real = [r for r in ledger.recent_runs(airflow.engine(), name, limit=1) if r["collection"] == collection]
    assert [(r["created"], r["updated"], r["deleted"], r["conflicts"]) for r in real] == \
        [(planned["creates"], planned["updates"], planned["deletes"], planned["conflicts"])]
    assert items(b, collection)[keys[3]]["title"] == "edited on the remote"


def test_plan_full_prune_lists_the_remote_items_the_source_does_not_have(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 4)
    name = f"dryprune_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection)
    run_ok(airflow, dag_id)
    stray = b.api("POST", f"/items/{collection}", json={"id": 900, "title": "only on the remote"})
    before = written_state(airflow, b, name, collection)

    without_full = run_cli(airflow, "plan", name, "--prune")
    assert without_full.returncode == 2 and "--prune needs --full" in without_full.stderr

    result = run_cli(airflow, "plan", name, "--full", "--prune")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_counts(result.stdout, collection) == {"creates": 0, "updates": 0, "deletes": 0, "prunes": 1,
                                                         "conflicts": 0}
    assert f"prune (the source is asked again right before each delete): {stray['id']}" in result.stdout
    assert "full copy" in result.stdout
    assert written_state(airflow, b, name, collection) == before
