"""A local Airflow home for the demo, the benchmarks and the end-to-end tests.

Airflow runs as a subprocess (``airflow dags test``) with everything in environment variables: an SQLite
metadata database under the home, this project's ``dags/`` folder, and the connections, including
``directus_sync_db`` for the remote-sources table. Nothing here is used by the DAGs themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))


@dataclass
class LocalAirflow:
    """An Airflow home; ``connections`` become ``AIRFLOW_CONN_<ID>`` variables of every command."""

    home: Path
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # Commands here run one after another and expect the table's latest rows.
            "DIRECTUS_SYNC_TABLE_REFRESH_SECONDS": "0",
        })
        env.update({f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in self.connections.items()})
        env.update(self.extra_env)
        return env

    def run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AIRFLOW_BIN, *args], env=self.env(), capture_output=True, text=True, timeout=timeout)

    def migrate(self) -> None:
        """Create the metadata database (SQLite under the home)."""
        self.home.mkdir(parents=True, exist_ok=True)
        result = self.run("db", "migrate")
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stderr[-3000:]}")

    def dags_test(self, dag_id: str, logical_date: datetime | None = None, conf: dict[str, Any] | None = None
                  ) -> subprocess.CompletedProcess[str]:
        """One DAG run, in-process, as ``airflow dags test`` runs it."""
        args = ["dags", "test", dag_id, (logical_date or datetime.now(UTC)).isoformat()]
        if conf:
            args += ["--conf", json.dumps(conf)]
        return self.run(*args)
