"""The generated sync DAGs, run through real Airflow against real Directus instances."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from devtools.devserver import DirectusInstance

from .harness import Airflow, activity_count, conn_id, create_collection, items

SYNCED = ["title", "views"]


def run_ok(airflow: Airflow, dag_id: str, **conf: object) -> str:
    result = airflow.dags_test(dag_id, datetime.now(UTC), conf or None)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "state=success" in output, output[-6000:]
    return output


def run_fails(airflow: Airflow, dag_id: str) -> str:
    result = airflow.dags_test(dag_id, datetime.now(UTC))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-6000:]
    return output


def add_remote(airflow: Airflow, name: str, source: DirectusInstance, remote: DirectusInstance, collection: str,
               fields: list[str] = SYNCED, **row: object) -> str:
    return airflow.add_remote(name=name, source_conn_id=conn_id(source), remote_conn_id=conn_id(remote),
                              schema=[{"name": collection, "fields": fields}], **row)


def seed(instance: DirectusInstance, collection: str, count: int) -> list[int]:
    created = instance.api("POST", f"/items/{collection}", json=[
        {"title": f"title {n}", "body": f"body {n}", "views": n, "internal_note": "not for remotes"}
        for n in range(count)])
    return [item["id"] for item in created]


def synced_view(instance: DirectusInstance, collection: str) -> dict[int, dict[str, object]]:
    return {key: {f: item[f] for f in SYNCED} for key, item in items(instance, collection).items()}


def test_creates_updates_and_deletes_arrive_with_only_the_listed_fields(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 12)
    dag_id = add_remote(airflow, f"ab_{collection}", a, b, collection)

    run_ok(airflow, dag_id)  # first run: full copy
    assert synced_view(b, collection) == synced_view(a, collection)
    assert all(item["body"] is None and item["internal_note"] is None for item in items(b, collection).values())

    a.api("PATCH", f"/items/{collection}", json={"keys": keys[:3], "data": {"title": "edited", "body": "x"}})
    a.api("DELETE", f"/items/{collection}", json=keys[-2:])
    new_keys = seed(a, collection, 4)
    run_ok(airflow, dag_id)

    remote = items(b, collection)
    assert synced_view(b, collection) == synced_view(a, collection)
    assert all(remote[k]["title"] == "edited" for k in keys[:3])
    assert not set(keys[-2:]) & set(remote)
    assert set(new_keys) <= set(remote)
    assert all(item["body"] is None and item["internal_note"] is None for item in remote.values())


def test_a_draft_row_makes_no_dag_and_an_invalid_row_leaves_the_others_working(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 3)
    good = add_remote(airflow, f"good_{collection}", a, b, collection)
    draft = add_remote(airflow, f"draft_{collection}", a, b, collection, status="draft")
    broken = airflow.add_remote(name=f"bad_{collection}", source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                                schema=[{"name": collection}], schedule="every tuesday")

    bag = airflow.dagbag()
    assert bag["import_errors"] == {}
    assert good in bag["dags"] and broken in bag["dags"]
    assert draft not in bag["dags"]

    output = run_fails(airflow, broken)
    assert f"remote-sources row 'bad_{collection}' is invalid" in output
    assert "schema[0].fields: Field required" in output
    assert "schedule: Value error, 'every tuesday' is not a cron expression" in output

    run_ok(airflow, good)
    assert synced_view(b, collection) == synced_view(a, collection)


def test_one_source_feeds_two_remotes(instances: dict[str, DirectusInstance], airflow: Airflow,
                                      collection: str) -> None:
    a, b, c = instances["a"], instances["b"], instances["c"]
    for instance in (a, b, c):
        create_collection(instance, collection)
    seed(a, collection, 5)
    to_b = add_remote(airflow, f"fan_b_{collection}", a, b, collection)
    to_c = add_remote(airflow, f"fan_c_{collection}", a, c, collection, fields=["title"])
    run_ok(airflow, to_b)
    run_ok(airflow, to_c)
    a.api("PATCH", f"/items/{collection}/1", json={"title": "fresh", "views": 99})
    run_ok(airflow, to_b)
    run_ok(airflow, to_c)
    assert synced_view(b, collection) == synced_view(a, collection)
    assert {k: v["title"] for k, v in items(c, collection).items()} == \
        {k: v["title"] for k, v in items(a, collection).items()}
    assert items(c, collection)[1]["views"] is None  # not in that remote's schema


def test_two_way_sync_does_not_echo(instances: dict[str, DirectusInstance], airflow: Airflow,
                                    collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 5)
    a_to_b = add_remote(airflow, f"ping_{collection}", a, b, collection)
    b_to_a = add_remote(airflow, f"pong_{collection}", b, a, collection)
    run_ok(airflow, a_to_b)
    run_ok(airflow, b_to_a)
    a.api("PATCH", f"/items/{collection}/2", json={"title": "from a"})
    b.api("PATCH", f"/items/{collection}/4", json={"title": "from b"})
    run_ok(airflow, a_to_b)
    run_ok(airflow, b_to_a)
    counts = (activity_count(a, collection), activity_count(b, collection))
    for _ in range(2):
        run_ok(airflow, a_to_b)
        run_ok(airflow, b_to_a)
    assert (activity_count(a, collection), activity_count(b, collection)) == counts
    assert synced_view(a, collection) == synced_view(b, collection)
    assert items(b, collection)[2]["title"] == "from a"
    assert items(a, collection)[4]["title"] == "from b"


def test_a_remote_missing_a_field_fails_clearly_and_notifies(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection, extra_fields=("subtitle",))
    create_collection(b, collection)
    seed(a, collection, 2)
    editor = a.api("POST", "/users", json={"email": f"editor-{collection}@example.com", "password": "pw-12345678"})
    dag_id = add_remote(airflow, f"missing_{collection}", a, b, collection, fields=["title", "subtitle"],
                        notify_users=[editor["id"]])
    output = run_fails(airflow, dag_id)
    assert f"field {collection}.subtitle is missing on 'directus_b'" in output
    notes = a.api("GET", "/notifications", params={"filter": json.dumps({"recipient": {"_eq": editor["id"]}}),
                                                   "fields": "subject,message"})
    assert len(notes) == 1
    assert f"missing_{collection}" in notes[0]["subject"]
    assert f"{collection}.subtitle is missing on 'directus_b'" in notes[0]["message"]
    assert dag_id in notes[0]["message"]
    assert items(b, collection) == {}


def test_a_wrong_token_fails_with_a_clear_message_and_is_not_logged(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 2)
    airflow.connections["directus_wrong"] = {"conn_type": "http", "host": b.url, "password": "not-the-token-42"}
    dag_id = airflow.add_remote(name=f"wrong_{collection}", source_conn_id=conn_id(a),
                                remote_conn_id="directus_wrong", schema=[{"name": collection, "fields": SYNCED}])
    output = run_fails(airflow, dag_id)
    assert "Directus connection 'directus_wrong'" in output
    assert "(401): Invalid user credentials" in output
    assert "not-the-token-42" not in output
    assert items(b, collection) == {}


def test_replaying_an_old_interval_keeps_the_newest_state(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 3)
    dag_id = add_remote(airflow, f"replay_{collection}", a, b, collection)
    run_ok(airflow, dag_id)
    a.api("PATCH", f"/items/{collection}/1", json={"title": "v1"})
    time.sleep(1)
    between = datetime.now(UTC)
    time.sleep(1)
    run_ok(airflow, dag_id)
    a.api("PATCH", f"/items/{collection}/1", json={"title": "v2"})
    run_ok(airflow, dag_id)
    assert items(b, collection)[1]["title"] == "v2"

    # A manual run dated in the interval that saw "v1". Manual runs read from the last window's end to now
    # (see the README), so it no longer re-reads that interval: this only checks that it keeps "v2".
    replay = airflow.dags_test(dag_id, between)
    assert replay.returncode == 0, (replay.stdout + replay.stderr)[-4000:]
    assert items(b, collection)[1]["title"] == "v2"


def test_the_dag_folder_imports_without_errors(airflow: Airflow) -> None:
    bag = airflow.dagbag()
    assert bag["import_errors"] == {}
    assert bag["dags"], "the table has published rows, so there are DAGs"
    assert all(d.startswith("directus_sync__") for d in bag["dags"])
