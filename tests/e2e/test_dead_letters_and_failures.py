"""Dead letters of deletes, errors no retry can fix, and lost staged files, against real instances."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from devtools.devserver import DirectusInstance
from directus_sync.state import tables
from tests.support import rows_of

from .harness import Airflow, conn_id, create_collection, items
from .test_sync_dags import SYNCED, add_remote, run_fails, run_ok, seed, synced_view

REFUSAL = "Items of this collection are archived, not deleted"


def letters(airflow: Airflow, remote: str) -> list[tuple[str, str, int]]:
    """The remote's dead letters: key, action, attempts."""
    return [(str(r["item_key"]), str(r["action"]), int(r["attempts"]))
            for r in rows_of(airflow.engine(), tables.dead_letters, remote)]


def refuse_deletes(instance: DirectusInstance, collection: str) -> str:
    """A blocking Flow that answers every delete of ``collection`` with a 400, as a site rule would."""
    flow = instance.api("POST", "/flows", json={
        "name": f"keep {collection}", "status": "active", "trigger": "event", "accountability": None,
        "options": {"type": "filter", "scope": ["items.delete"], "collections": [collection]}})
    operation = instance.api("POST", "/operations", json={
        "flow": flow["id"], "key": "refuse", "name": "refuse", "type": "throw-error", "position_x": 20,
        "position_y": 1, "options": {"code": "DELETE_REFUSED", "status": "400", "message": REFUSAL}})
    instance.api("PATCH", f"/flows/{flow['id']}", json={"operation": operation["id"]})
    return str(flow["id"])


def test_a_full_copy_keeps_a_dead_lettered_delete_until_the_remote_deletes_the_item(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 4)
    name = f"dldel_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection)
    run_ok(airflow, dag_id)
    flow = refuse_deletes(b, collection)
    try:
        a.api("DELETE", f"/items/{collection}/{keys[0]}")
        a.api("PATCH", f"/items/{collection}/{keys[1]}", json={"title": "edited"})
        output = run_fails(airflow, dag_id)
        assert "the remote refused 1 items (now in the dead-letter table)" in output
        assert REFUSAL in output
        assert letters(airflow, name) == [(str(keys[0]), "delete", 1)]
        assert items(b, collection)[keys[1]]["title"] == "edited"  # everything else was written

        # A full copy stages no deletes of its own; the refused one must still be tried, and kept.
        result = airflow.dags_test(dag_id, datetime.now(UTC), {"full_resync": True})
        output = result.stdout + result.stderr
        assert result.returncode != 0, "the delete is still refused, so the run must fail:\n" + output[-4000:]
        assert "the remote refused 1 items (now in the dead-letter table)" in output
        assert letters(airflow, name) == [(str(keys[0]), "delete", 2)]
        assert keys[0] in items(b, collection)
    finally:
        b.api("DELETE", f"/flows/{flow}")

    run_ok(airflow, dag_id, full_resync=True)
    assert keys[0] not in items(b, collection)
    assert letters(airflow, name) == []
    assert synced_view(b, collection) == synced_view(a, collection)


def task_tries(airflow: Airflow, dag_id: str, task_id: str) -> list[tuple[int, str]]:
    """Every try of ``task_id`` in the DAG's runs, from the Airflow home's metadata database."""
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        current = db.execute("SELECT try_number, state FROM task_instance WHERE dag_id = ? AND task_id = ?",
                             (dag_id, task_id)).fetchall()
        earlier = db.execute("SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND task_id = ?",
                             (dag_id, task_id)).fetchall()
    return sorted((int(n), str(state)) for n, state in [*earlier, *current])


def test_a_token_the_remote_refuses_fails_the_run_at_once_without_retries(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 2)
    airflow.connections["directus_revoked"] = {"conn_type": "http", "host": b.url, "password": "revoked-token-7"}
    dag_id = airflow.add_remote(name=f"revoked_{collection}", source_conn_id=conn_id(a),
                                remote_conn_id="directus_revoked", schema=[{"name": collection, "fields": SYNCED}],
                                retries=2)
    started = time.monotonic()
    output = run_fails(airflow, dag_id)
    elapsed = time.monotonic() - started
    assert "(401): Invalid user credentials" in output
    # One try, no retries a minute apart: the alert goes out now.
    assert task_tries(airflow, dag_id, "filter_schema") == [(1, "failed")]
    assert items(b, collection) == {}
    print(f"the run failed after {elapsed:.0f} s")


def lose_once_written(path_glob: str, root: Path, records: int, lost: list[Path], stop: threading.Event) -> None:
    """Delete the first file matching ``path_glob`` under ``root`` once it holds ``records`` lines."""
    while not stop.is_set():
        for path in root.glob(path_glob):
            if path.read_text().count("\n") == records:
                path.unlink()
                lost.append(path)
                return
        time.sleep(0.02)


def test_a_staged_file_lost_between_extract_and_plan_fails_the_run_instead_of_planning_nothing(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 5)
    dag_id = add_remote(airflow, f"lost_{collection}", a, b, collection)
    # What a worker without the extract's local disk sees: the file extract_changes staged is not there.
    lost: list[Path] = []
    stop = threading.Event()
    watcher = threading.Thread(target=lose_once_written, args=(
        f"{dag_id}/*/{collection}.upserts.jsonl", airflow.home / "directus_sync" / "staging", 5, lost, stop))
    watcher.start()
    try:
        output = run_fails(airflow, dag_id)
    finally:
        stop.set()
        watcher.join()
    assert lost, "the staged upserts were never seen"
    assert f"the staged file file://{lost[0]} does not exist, but extract_changes staged 5 records in it" in output
    assert "set DIRECTUS_SYNC_STAGING_URL to storage every worker reaches" in output
    assert "0 to create, 0 to update, 0 to delete" not in output
    assert items(b, collection) == {}
