"""A multi-machine Airflow on one machine, for the distributed end-to-end test.

Everything a deployment with Celery workers has, started natively (no Docker engine runs here):
PostgreSQL metadata, the Redis broker of this machine, an API server, a scheduler, a dag-processor, a
triggerer, and Celery workers that each have their own ``AIRFLOW_HOME``, their own local folders and
their own host name (a UTS namespace of their own, so task instances record which worker ran them).
Staging is on S3-compatible object storage served by moto. Nothing can travel between two tasks of a
run through local files: they only share what the deployment shares (metadata DB, broker, object
storage, the remote-sources table, the DAG files).

Which worker runs a task is decided by a cluster policy (``airflow_local_settings.py``) that gives each
task of the sync DAGs a queue served by one worker only, so every run hands its staged files from one
worker to the other at each step.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis
import requests

from devtools.devserver import PostgresDatabase
from devtools.localairflow import AIRFLOW_BIN, DAGS_FOLDER, PLUGINS_FOLDER, Standalone, stop_process_group

MOTO_BIN = str(Path(AIRFLOW_BIN).with_name("moto_server"))
CELERY_BIN = str(Path(AIRFLOW_BIN).with_name("celery"))
BUCKET = "directus-sync-staging"
STAGING_CONN_ID = "staging_s3"
# The queue of each task of a sync DAG: consecutive steps alternate between the two workers.
QUEUES = {
    "extract_changes": "worker_a", "filter_schema": "worker_b", "apply_deletes": "worker_a",
    "apply_updates": "worker_b", "apply_creates": "worker_a", "cleanup_staging": "worker_b",
    "record_run": "worker_a", "notify_on_failure": "worker_b",
}
WORKERS = {"worker-a": "worker_a", "worker-b": "worker_b"}  # host name -> the queue it serves
POLICY = f'''"""Cluster policy of the distributed test: each task of a sync DAG goes to one worker's queue."""

QUEUES = {QUEUES!r}


def task_policy(task):
    if task.dag_id.startswith("directus_sync__") and task.task_id in QUEUES:
        task.queue = QUEUES[task.task_id]
'''
CONTROL_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CeleryCluster:
    """The cluster's shared settings; :meth:`running` starts it and stops every process on exit."""

    root: Path
    tag: str
    connections: dict[str, dict[str, Any]]
    table_conn: dict[str, Any]
    api_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    redis_db: int = 0
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metadata = PostgresDatabase(f"directus_sync_e2e_{self.tag}_airflow")
        self.redis_db = 8 + os.getpid() % 8  # of Redis's 16 databases, one this test run flushes
        self.jwt_secret = secrets.token_hex(16)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def home(self, name: str) -> Path:
        return self.root / name

    def env(self, home: Path) -> dict[str, str]:
        """What every component of the deployment shares, plus its own home."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DIRECTUS_SYNC"))}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata.url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.metadata.url.replace('+psycopg2', '')}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            # The recorded host name is the worker's own (no DNS lookup of a name nothing resolves).
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "DIRECTUS_SYNC_STAGING_URL": f"s3://{STAGING_CONN_ID}@{BUCKET}/staging",
            f"AIRFLOW_CONN_{STAGING_CONN_ID.upper()}": json.dumps({
                "conn_type": "aws", "login": "testing", "password": "testing",
                "extra": {"endpoint_url": self.s3_url, "region_name": "us-east-1"}}),
            "AIRFLOW_CONN_DIRECTUS_SYNC_DB": json.dumps(self.table_conn),
        })
        env.update({f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in self.connections.items()})
        return env

    @property
    def passwords_file(self) -> Path:
        # Where Standalone looks for the admin's password.
        return self.home("control") / "simple_auth_manager_passwords.json.generated"

    @contextlib.contextmanager
    def running(self, timeout: float = 300) -> Iterator[Standalone]:
        """Start object storage, the control plane and the workers; yield a client of the API server."""
        redis.Redis(db=self.redis_db).flushdb()
        self.metadata.recreate()
        control = self.home("control")
        (control / "config").mkdir(parents=True, exist_ok=True)
        (control / "config" / "airflow_local_settings.py").write_text(POLICY)
        self.passwords_file.write_text(json.dumps({"admin": "admin"}))
        try:
            self._start("moto", [MOTO_BIN, "-H", "127.0.0.1", "-p", str(self.s3_port)], control)
            migrated = subprocess.run([AIRFLOW_BIN, "db", "migrate"], env=self.env(control), capture_output=True,
                                      text=True, timeout=600)
            assert migrated.returncode == 0, migrated.stderr[-3000:]
            self._create_bucket()
            for component in CONTROL_COMPONENTS:
                self._start(component, [AIRFLOW_BIN, *component.split()], control)
            for hostname, queue in WORKERS.items():
                # A host of its own: its own name (unshare --uts), home, logs and local folders.
                worker = [AIRFLOW_BIN, "celery", "worker", "--queues", queue, "--celery-hostname",
                          f"{hostname}@{hostname}", "--skip-serve-logs"]
                self._start(hostname, ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh",
                                       *worker], self.home(hostname))
            api = Standalone(url=self.url, home=control, log_path=control / "api-server.log",
                             process=dict(self.processes)["api-server"])
            self._wait_until_ready(api, timeout)
            yield api
        finally:
            for _, process in reversed(self.processes):
                stop_process_group(process, grace=30)
            self.processes.clear()
            redis.Redis(db=self.redis_db).flushdb()
            self.metadata.drop()

    def _start(self, name: str, command: list[str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        with (home / f"{name}.log").open("w") as log:
            process = subprocess.Popen(command, env=self.env(home), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=home)
        self.processes.append((name, process))

    def _create_bucket(self) -> None:
        client = boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _wait_until_ready(self, api: Standalone, timeout: float) -> None:
        """Until the API answers and both workers answer Celery's ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stopped = [name for name, p in self.processes if p.poll() is not None]
            if stopped:
                raise RuntimeError(f"{', '.join(stopped)} stopped; see the logs under {self.root}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{api.url}/api/v2/version", timeout=2).ok and self.workers_ready():
                    return
            time.sleep(2)
        raise RuntimeError(f"the cluster was not ready within {timeout:.0f} s; see the logs under {self.root}")

    def workers_ready(self) -> bool:
        ping = subprocess.run(
            [CELERY_BIN, "--app", "airflow.providers.celery.executors.celery_executor.app",
             "inspect", "ping", "--timeout", "3"], env=self.env(self.home("control")), capture_output=True, text=True,
            timeout=60)
        return all(f"{hostname}@{hostname}" in ping.stdout for hostname in WORKERS)

    def worker_homes(self) -> list[Path]:
        return [self.home(hostname) for hostname in WORKERS]

    def logs(self) -> str:
        """The end of every component's log, for a failing test's report."""
        parts = []
        for log in sorted(self.root.glob("*/*.log")):
            parts.append(f"--- {log.relative_to(self.root)}\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)
