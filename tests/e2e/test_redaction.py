"""Item contents never leave the task log: a refused item's value is in none of the places errors go."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from devtools.devserver import DirectusInstance
from directus_sync.state import tables
from tests.support import rows_of
from tests.webhook import Webhook

from .harness import Airflow, create_collection, items
from .test_sync_dags import add_remote, run_fails

# A value no code would produce: wherever it shows up, it came from the item.
SECRET = "leak-me-7f3a@example.com"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def xcoms(airflow: Airflow, dag_id: str) -> list[tuple[str, str, str]]:
    """Every XCom of the DAG's runs (task, key, value as stored), from the Airflow home's metadata database."""
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        rows = db.execute("SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (dag_id,)).fetchall()
    return [(str(task), str(key), value.decode() if isinstance(value, bytes) else str(value))
            for task, key, value in rows]


def test_a_unique_violation_leaves_the_value_out_of_dead_letters_ledger_xcom_notifications_and_alerts(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, webhook: Webhook) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection, extra_fields=("email",))
    create_collection(b, collection, extra_fields=("email",))
    b.api("PATCH", f"/fields/{collection}/email", json={"schema": {"is_unique": True}})
    b.api("POST", f"/items/{collection}", json={"id": 1000, "title": "already here", "email": SECRET})
    [key] = [item["id"] for item in a.api("POST", f"/items/{collection}", json=[
        {"title": "same address", "email": SECRET}])]
    editor = a.api("POST", "/users", json={"email": f"editor-{collection}@example.com", "password": "pw-12345678"})
    name = f"redact_{collection}"
    airflow.connections["redact_webhook"] = {"conn_type": "http", "host": webhook.url}
    dag_id = add_remote(airflow, name, a, b, collection, fields=["title", "email"], notify_users=[editor["id"]],
                        alerts=[{"type": "http", "conn_id": "redact_webhook", "endpoint": "/alerts"}])

    output = run_fails(airflow, dag_id)
    assert SECRET in output, "Directus quoted the value; the task log keeps the full text"
    assert key not in items(b, collection)

    safe = f'RECORD_NOT_UNIQUE: field "email" in collection "{collection}" must be unique'
    letters = rows_of(airflow.engine(), tables.dead_letters, name)
    assert [(r["item_key"], r["action"]) for r in letters] == [(str(key), "create")]
    assert safe in letters[0]["error"]
    runs = rows_of(airflow.engine(), tables.runs, name)
    assert runs and all(r["status"] == "failed" for r in runs)
    assert safe in (runs[0]["error"] or "") and f"{collection} {key}: " in (runs[0]["error"] or "")
    stored = xcoms(airflow, dag_id)
    # The failed step's result: its failure record (the safe error, and what it wrote besides).
    [failed] = [json.loads(value) for task, k, value in stored if task == "apply_creates" and k == "return_value"]
    assert failed["step"] == "failed" and failed["task"] == "apply_creates"
    error = failed["error"]
    assert safe in error and f"{collection} {key}: " in error
    notes = a.api("GET", "/notifications", params={"filter": json.dumps({"recipient": {"_eq": editor["id"]}}),
                                                   "fields": "subject,message"})
    assert len(notes) == 1 and safe in notes[0]["message"]
    [alert] = webhook.received
    assert alert["event"] == "run_failed" and safe in alert["message"] and f"{collection} {key}: " in alert["message"]

    for place, content in [("the dead-letter table", letters), ("the ledger", runs), ("XCom", stored),
                           ("the Directus notifications", notes), ("the webhook", webhook.received)]:
        assert SECRET not in json.dumps(content, default=str), f"the item's value reached {place}"
