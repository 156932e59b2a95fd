"""The end-to-end harness: real Directus instances on PostgreSQL, and real Airflow run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from directus_sync import store
from directus_sync.devserver import DirectusInstance
from directus_sync.provision import provision

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def sync_token(instance: DirectusInstance) -> str:
    return f"sync-token-{instance.name}"


def conn_id(instance: DirectusInstance) -> str:
    return f"directus_{instance.name}"


def create_collection(instance: DirectusInstance, name: str, extra_fields: tuple[str, ...] = ()) -> None:
    """An ``articles``-like collection: integer key, title, body, views, and a field never synced."""
    fields: list[dict[str, Any]] = [
        {"field": "id", "type": "integer", "meta": {"hidden": True},
         "schema": {"is_primary_key": True, "has_auto_increment": True}},
        {"field": "title", "type": "string", "meta": {}, "schema": {}},
        {"field": "body", "type": "text", "meta": {}, "schema": {}},
        {"field": "views", "type": "integer", "meta": {}, "schema": {}},
        {"field": "internal_note", "type": "string", "meta": {}, "schema": {}},
    ]
    fields += [{"field": f, "type": "string", "meta": {}, "schema": {}} for f in extra_fields]
    instance.api("POST", "/collections", json={"collection": name, "meta": {}, "schema": {}, "fields": fields})
    provision(instance.url, instance.admin_token, [name], token=sync_token(instance))


def items(instance: DirectusInstance, collection: str, fields: str = "*") -> dict[int, dict[str, Any]]:
    """Every item of ``collection`` by key, read as the admin."""
    data = instance.api("GET", f"/items/{collection}", params={"limit": -1, "fields": fields, "sort": "id"})
    return {item["id"]: item for item in data}


def activity_count(instance: DirectusInstance, collection: str) -> int:
    data = instance.api("GET", "/activity", params={"filter": json.dumps({"collection": {"_eq": collection}}),
                                                   "aggregate[count]": "id"})
    return int(data[0]["count"]["id"])


@dataclass
class Airflow:
    """One Airflow home (SQLite metadata) whose remote-sources table lives in a PostgreSQL database."""

    home: Path
    table_db: str
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def table_url(self) -> str:
        return f"{PG_URL}/{self.table_db}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "DIRECTUS_SYNC_TABLE_REFRESH_SECONDS": "0",
            "AIRFLOW_CONN_DIRECTUS_SYNC_DB": json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
                "schema": self.table_db}),
        })
        for cid, conn in self.connections.items():
            env[f"AIRFLOW_CONN_{cid.upper()}"] = json.dumps(conn)
        return env

    def add_instance(self, instance: DirectusInstance, token: str | None = None) -> str:
        cid = conn_id(instance)
        self.connections[cid] = {"conn_type": "http", "host": instance.url, "password": token or sync_token(instance)}
        return cid

    def engine(self) -> sa.engine.Engine:
        return sa.create_engine(self.table_url)

    def add_remote(self, **row: Any) -> str:
        row.setdefault("status", "published")
        row.setdefault("retries", 0)
        for key in ("schema", "notify_users"):
            if key in row and not isinstance(row[key], str):
                row[key] = json.loads(json.dumps(row[key]))
        store.upsert_row(self.engine(), row)
        return f"directus_sync__{row['name']}"

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AIRFLOW, *args], env=self.env(), capture_output=True, text=True, timeout=timeout)

    def dags_test(self, dag_id: str, logical_date: datetime, conf: dict[str, Any] | None = None
                  ) -> subprocess.CompletedProcess[str]:
        args = ["dags", "test", dag_id, logical_date.isoformat()]
        if conf:
            args += ["--conf", json.dumps(conf)]
        return self.run(*args)

    def dagbag(self) -> dict[str, Any]:
        """Parse the DAG folder as the dag-processor does; return the DAG ids and import errors."""
        script = (
            "import json\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
            "print(json.dumps({'dags': sorted(bag.dags), 'import_errors': bag.import_errors}))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], env=self.env(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return parsed
