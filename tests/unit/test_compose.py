"""docker-compose.airflow.yml, checked by parsing (no Docker engine runs here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from directus_sync.devserver import DIRECTUS_VERSION

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init"}


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


def test_staging_is_a_volume_every_worker_shares(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-worker"]["environment"]
    assert env["DIRECTUS_SYNC_STAGING_URL"] == "file:///opt/airflow/staging"
    assert "sync-staging:/opt/airflow/staging" in compose["services"]["airflow-worker"]["volumes"]
    assert "sync-staging" in compose["volumes"]


def test_the_setup_script_registers_remotes_with_the_cli() -> None:
    script = (REPO / "docker" / "setup.sh").read_text()
    assert "directus-sync provision" in script
    assert "directus-sync db init" in script
    assert script.count("directus-sync remote add") == 2
