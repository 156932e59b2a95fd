"""docker-compose.airflow.yml, checked by parsing (no Docker engine runs here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devtools.devserver import DIRECTUS_VERSION
from tests.e2e.cluster import CONTROL_COMPONENTS, WORKERS, CeleryCluster

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init"}
COMPLETED = {"condition": "service_completed_successfully"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.airflow.yml").read_text())
    return loaded


def test_it_has_the_official_airflow_services_and_two_directus_instances(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert AIRFLOW_SERVICES | {"postgres", "redis", "directus-a", "directus-b", "directus-sync-setup"} <= services


def test_directus_is_the_pinned_version_each_on_its_own_database(compose: dict[str, Any]) -> None:
    directus = [compose["services"][name] for name in ("directus-a", "directus-b")]
    assert all(s["image"] == f"directus/directus:{DIRECTUS_VERSION}" for s in directus)
    databases = {s["environment"]["DB_DATABASE"] for s in directus}
    assert len(databases) == 2
    init_sql = (REPO / "docker" / "postgres-init.sql").read_text()
    assert all(f"CREATE DATABASE {db};" in init_sql for db in databases)


def test_airflow_services_share_the_image_with_the_package_and_the_project_folders(compose: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3." in dockerfile
    assert "pip install" in dockerfile and "/opt/directus-sync" in dockerfile
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        assert service["build"] == "."
        assert "./dags:/opt/airflow/dags" in service["volumes"]
        assert "./plugins:/opt/airflow/plugins" in service["volumes"]
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert (REPO / "dags").is_dir() and (REPO / "plugins").is_dir()


def test_connections_point_at_the_instances_with_the_tokens_setup_gives_them(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-worker"]["environment"]
    setup = compose["services"]["directus-sync-setup"]["environment"]
    assert env["AIRFLOW_CONN_DIRECTUS_SYNC_DB"].startswith("postgres://")
    assert env["AIRFLOW_CONN_DIRECTUS_SYNC_DB"].endswith("/directus_sync")
    for side in ("a", "b"):
        conn = json.loads(env[f"AIRFLOW_CONN_DIRECTUS_{side.upper()}"])
        assert conn["conn_type"] == "http"
        assert conn["host"] == f"http://directus-{side}:8055" == setup[f"DIRECTUS_{side.upper()}_URL"]
        assert conn["password"] == setup[f"DIRECTUS_{side.upper()}_SYNC_TOKEN"]
        directus_env = compose["services"][f"directus-{side}"]["environment"]
        assert directus_env["ADMIN_TOKEN"] == setup[f"DIRECTUS_{side.upper()}_ADMIN_TOKEN"]


def test_initialisation_fails_when_migration_fails_and_nothing_starts_after_a_failed_init(
        compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    script = "\n".join(init["command"])
    assert init["entrypoint"] == "/bin/bash"
    assert "set -euo pipefail" in script and "|| true" not in script
    # The official image's entrypoint migrates and creates the user, failing on any error.
    assert script.rstrip().endswith("exec /entrypoint airflow version")
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert compose["services"][name]["depends_on"]["airflow-init"] == COMPLETED


def test_files_are_written_as_airflow_uid(compose: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert compose["services"][name]["user"] == "${AIRFLOW_UID:-50000}:0"
    assert compose["services"]["airflow-init"]["user"] == "0:0"  # it chowns the folders to AIRFLOW_UID
    assert 'chown -R "${AIRFLOW_UID:-50000}:0"' in "\n".join(compose["services"]["airflow-init"]["command"])


def test_staging_is_a_bucket_every_worker_reaches_and_no_local_folder(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-worker"]["environment"]
    url = urlsplit(env["DIRECTUS_SYNC_STAGING_URL"])
    assert url.scheme == "s3"
    conn = json.loads(env[f"AIRFLOW_CONN_{url.username.upper()}"])
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "http://minio:9000"
    bucket = compose["services"]["minio-bucket"]["command"][-1]
    assert f"mc mb --ignore-existing local/{url.hostname}" in bucket
    assert not any("staging" in volume for volume in compose["services"]["airflow-worker"]["volumes"])
    for name in AIRFLOW_SERVICES:
        assert compose["services"][name]["depends_on"]["minio-bucket"] == COMPLETED


def test_the_distributed_test_runs_what_the_compose_file_deploys(compose: dict[str, Any], tmp_path: Path) -> None:
    """Same components, executor, broker, metadata database and staging settings as tests/e2e/cluster.py."""
    cluster = CeleryCluster(root=tmp_path, tag="compose", connections={}, table_conn={})
    tested = cluster.env(tmp_path)
    deployed = compose["services"]["airflow-worker"]["environment"]
    commands = {compose["services"][name]["command"] for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {*CONTROL_COMPONENTS, "celery worker"}
    for key in ("AIRFLOW__CORE__EXECUTOR", "DIRECTUS_SYNC_STAGING_URL"):
        assert tested[key] == deployed[key], key
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert urlsplit(tested[key]).scheme == urlsplit(deployed[key]).scheme, key
    assert tested["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    staging_conn = f"AIRFLOW_CONN_{urlsplit(deployed['DIRECTUS_SYNC_STAGING_URL']).username.upper()}"
    assert json.loads(tested[staging_conn])["conn_type"] == json.loads(deployed[staging_conn])["conn_type"]
    assert len(WORKERS) >= 2


def test_the_setup_script_registers_remotes_with_the_cli() -> None:
    script = (REPO / "docker" / "setup.sh").read_text()
    assert "directus-sync provision" in script
    assert "directus-sync db init" in script
    assert script.count("directus-sync remote add") == 2
