"""The end-to-end harness: real Directus instances on PostgreSQL, and real Airflow run as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devtools.devserver import ARTICLE_FIELDS, DirectusInstance, key_field, plain_field
from devtools.localairflow import AIRFLOW_BIN, DAGS_FOLDER, LocalAirflow
from directus_sync.directus.provision import provision
from directus_sync.state import sources

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = AIRFLOW_BIN
CLI = str(Path(sys.executable).with_name("directus-sync"))
ARTIFACTS = REPO / "test-artifacts"
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def sync_token(instance: DirectusInstance) -> str:
    return f"sync-token-{instance.name}"


def conn_id(instance: DirectusInstance) -> str:
    return f"directus_{instance.name}"


def create_collection(instance: DirectusInstance, name: str, extra_fields: tuple[str, ...] = ()) -> None:
    """An ``articles``-like collection: integer key, title, body, views, and a field never synced."""
    instance.create_collection(name, [*ARTICLE_FIELDS, *(plain_field(f) for f in extra_fields)])
    provision(instance.url, instance.admin_token, [name], token=sync_token(instance))


def create_uuid_collection(instance: DirectusInstance, name: str) -> None:
    """A collection keyed by UUIDs (title and views), as several instances creating items should use."""
    instance.create_collection(name, [key_field("uuid"), plain_field("title"), plain_field("views", "integer")])
    provision(instance.url, instance.admin_token, [name], token=sync_token(instance))


def items(instance: DirectusInstance, collection: str, fields: str = "*") -> dict[int, dict[str, Any]]:
    """Every item of ``collection`` by key, read as the admin."""
    data = instance.api("GET", f"/items/{collection}", params={"limit": -1, "fields": fields, "sort": "id"})
    return {item["id"]: item for item in data}


def activity_count(instance: DirectusInstance, collection: str) -> int:
    data = instance.api("GET", "/activity", params={"filter": json.dumps({"collection": {"_eq": collection}}),
                                                   "aggregate[count]": "id"})
    return int(data[0]["count"]["id"])


class Airflow(LocalAirflow):
    """The test Airflow home: its remote-sources table lives in a PostgreSQL database of its own."""

    def __init__(self, home: Path, table_db: str) -> None:
        super().__init__(home)
        self.table_db = table_db
        self.connections["directus_sync_db"] = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                                                "login": "postgres", "schema": table_db}

    @property
    def table_url(self) -> str:
        return f"{PG_URL}/{self.table_db}"

    def add_instance(self, instance: DirectusInstance, token: str | None = None) -> str:
        cid = conn_id(instance)
        self.connections[cid] = {"conn_type": "http", "host": instance.url, "password": token or sync_token(instance)}
        return cid

    def engine(self) -> sa.engine.Engine:
        return sa.create_engine(self.table_url)

    def add_remote(self, **row: Any) -> str:
        row.setdefault("status", "published")
        row.setdefault("retries", 0)
        sources.upsert_row(self.engine(), row)
        return f"directus_sync__{row['name']}"

    def dagbag(self) -> dict[str, Any]:
        """Parse the DAG folder as the dag-processor does; return the DAG ids and import errors."""
        script = (
            "import json\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})\n"
            "print(json.dumps({'dags': sorted(bag.dags), 'import_errors': bag.import_errors}))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], env=self.env(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return parsed


def run_cli(airflow: Airflow, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The ``directus-sync`` command, with the Airflow home's connections."""
    return subprocess.run([CLI, *args], env={**airflow.env(), "COLUMNS": "200", **env}, capture_output=True,
                          text=True, timeout=120)
