"""What the API cannot carry: concealed and encrypted fields, and collections whose changes leave no activity.

Directus reads ``conceal`` and ``encrypt`` fields back as ``**********``, so a sync would write that text
to the remote and then find every later update equal; a collection whose activity tracking is off logs no
activity, so incremental runs would never see its changes. Both must be refused, not silently synced.
"""

from __future__ import annotations

from devtools.devserver import DirectusInstance

from .harness import Airflow, create_collection, items, run_cli
from .test_sync_dags import add_remote, run_fails, run_ok, seed

MASKED_FIELDS = (
    {"field": "api_key", "type": "string", "meta": {"special": ["conceal"], "interface": "input-hash"}, "schema": {}},
    {"field": "vault", "type": "text", "meta": {"special": ["encrypt"], "interface": "input"}, "schema": {}},
)


def test_concealed_and_encrypted_fields_are_refused_and_nothing_is_written(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    for instance in (a, b):  # the same fields on both sides: only their masking stops the sync
        create_collection(instance, collection)
        for masked in MASKED_FIELDS:
            instance.api("POST", f"/fields/{collection}", json=masked)
    keys = seed(a, collection, 3)
    a.api("PATCH", f"/items/{collection}", json={"keys": keys, "data": {"api_key": "k-123", "vault": "v-456"}})
    assert {item["api_key"] for item in items(a, collection).values()} == {"**********"}  # as the sync reads it
    name = f"masked_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection, fields=["title", "api_key", "vault"])

    output = run_fails(airflow, dag_id)
    assert "filter_schema" in output
    for instance in ("directus_a", "directus_b"):
        assert f"field {collection}.api_key on '{instance}' is conceal: Directus returns '**********'" in output
        assert f"field {collection}.vault on '{instance}' is encrypt: Directus returns '**********'" in output
    assert items(b, collection) == {}, "nothing may reach the remote"

    result = run_cli(airflow, "check", name, COLUMNS="1000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"field {collection}.api_key on 'directus_a' is conceal" in result.stdout
    assert f"field {collection}.vault on 'directus_a' is encrypt" in result.stdout
    assert "remove the field from the schema" in result.stdout


def test_a_collection_without_activity_tracking_syncs_only_by_full_comparison(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    a.api("PATCH", f"/collections/{collection}", json={"meta": {"accountability": None}})
    keys = seed(a, collection, 3)
    name = f"untracked_{collection}"
    dag_id = add_remote(airflow, name, a, b, collection)
    untracked = f"activity tracking is off for {collection} on the source 'directus_a'"

    result = run_cli(airflow, "check", name, COLUMNS="1000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert untracked in result.stdout
    assert "set the collection's Activity tracking to 'all' or set reconcile_schedule" in result.stdout

    output = run_ok(airflow, dag_id)  # the first run is a full copy: it syncs the collection, and says so
    assert f"{untracked}: its changes leave no activity" in output
    assert {item["title"] for item in items(b, collection).values()} == {"title 0", "title 1", "title 2"}

    a.api("PATCH", f"/items/{collection}/{keys[0]}", json={"title": "changed without activity"})
    output = run_fails(airflow, dag_id)  # an incremental run would see nothing: it is refused instead
    assert untracked in output and "set reconcile_schedule" in output
    assert items(b, collection)[keys[0]]["title"] == "title 0"

    add_remote(airflow, name, a, b, collection, reconcile_schedule="@daily")
    # As the dag-processor would: a parse reads the changed row, which workers then build their DAG from.
    assert f"{dag_id}__reconcile" in airflow.dagbag()["dags"]
    result = run_cli(airflow, "check", name, COLUMNS="1000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"note (source directus_a): {untracked}" in result.stdout
    output = run_ok(airflow, dag_id)
    assert "this run cannot see its changes, the reconcile DAG syncs them" in output
    run_ok(airflow, f"{dag_id}__reconcile")
    assert items(b, collection)[keys[0]]["title"] == "changed without activity"
