"""A local Airflow home for the demo, the benchmarks and the end-to-end tests.

Airflow runs as a subprocess (``airflow dags test``, or ``airflow standalone`` for a scheduler, triggerer
and API server) with everything in environment variables: an SQLite metadata database under the home, this
project's ``dags/`` folder, and the connections, including ``directus_sync_db`` for the remote-sources
table. Nothing here is used by the DAGs themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
PLUGINS_FOLDER = DAGS_FOLDER.with_name("plugins")
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
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
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

    @contextlib.contextmanager
    def standalone(self, port: int = 8080, timeout: float = 300) -> Iterator[Standalone]:
        """``airflow standalone`` (API server on ``port``, scheduler, dag-processor, triggerer) until exit.

        Yields once the API answers and the scheduler, dag-processor and triggerer run; stops the whole
        process group on exit. Its output goes to ``standalone.log`` in the home.
        """
        url = f"http://localhost:{port}"
        env = self.env()
        env.update({
            # standalone starts its components as `airflow ...` subprocesses: they must find this environment's.
            "PATH": f"{Path(AIRFLOW_BIN).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        })
        self.home.mkdir(parents=True, exist_ok=True)
        log_path = self.home / "standalone.log"
        with log_path.open("w") as log:
            process = subprocess.Popen([AIRFLOW_BIN, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            server = Standalone(url=url, home=self.home, log_path=log_path, process=process)
            server.wait_until_ready(timeout)
            yield server
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 60) -> None:
    """SIGTERM the group ``process`` leads and wait for every member, SIGKILL what is left after ``grace``.

    Waiting for the leader alone is not enough: standalone's scheduler, dag-processor and triggerer are
    still shutting down for seconds after it exits, and would outlive a caller that stops there.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        while _group_alive(process) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _group_alive(process):
            return


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # reap the leader, else its zombie keeps the group "alive"
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Standalone:
    """A running ``airflow standalone``: its URL, log, admin login, and an authenticated API client."""

    url: str
    home: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    _token: str | None = field(default=None, repr=False)

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone stopped; see {self.log_path}")
            if "Airflow is ready" in self.log_path.read_text(errors="replace"):
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{self.url}/api/v2/version", timeout=2).ok:
                        return
            time.sleep(2)
        raise RuntimeError(f"airflow standalone was not ready within {timeout:.0f} s; see {self.log_path}")

    def login(self) -> tuple[str, str]:
        """The admin user and the password standalone generated for it."""
        logins = self.home / "simple_auth_manager_passwords.json.generated"
        user, password = next(iter(json.loads(logins.read_text()).items()))
        return user, password

    def token(self) -> str:
        """A JWT for the REST API, as the admin (fetched once)."""
        if self._token is None:
            user, password = self.login()
            response = requests.post(f"{self.url}/auth/token", json={"username": user, "password": password},
                                     timeout=60)
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the Airflow REST API (``/api/v2``...) as the admin; return the decoded JSON."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        response = requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None
