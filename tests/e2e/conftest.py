"""Fixtures: three real Directus 12.4.0 instances on PostgreSQL, and one real Airflow home."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devtools.devserver import DirectusInstance, PostgresDatabase, ensure_directus, running_instances
from directus_sync.state import tables

from .harness import REPO, Airflow

INSTANCE_NAMES = ("a", "b", "c")
# Per test session, so that two sessions on one PostgreSQL server never share a database.
RUN_TAG = f"{os.getpid()}"
TABLE_DB = f"directus_sync_e2e_{RUN_TAG}_table"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def databases() -> dict[str, PostgresDatabase]:
    """The PostgreSQL database of each instance, by instance name."""
    return {name: PostgresDatabase(f"directus_sync_e2e_{RUN_TAG}_{name}") for name in INSTANCE_NAMES}


@pytest.fixture(scope="session")
def instances(databases: dict[str, PostgresDatabase], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, DirectusInstance]]:
    cli = ensure_directus(REPO / ".cache" / "directus")
    workdir = tmp_path_factory.mktemp("directus")
    with running_instances(cli, list(databases.items()), workdir) as started:
        yield {instance.name: instance for instance in started}
    for database in databases.values():
        database.drop()


@pytest.fixture(scope="session")
def airflow(instances: dict[str, DirectusInstance], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TABLE_DB}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{TABLE_DB}"')
    conn.close()
    af = Airflow(home=Path(tmp_path_factory.mktemp("airflow_home")), table_db=TABLE_DB)
    for instance in instances.values():
        af.add_instance(instance)
    tables.migrate(af.engine())
    result = af.run("db", "migrate")
    assert result.returncode == 0, result.stderr[-3000:]
    yield af
    af.engine().dispose()
    PostgresDatabase(TABLE_DB).drop()


@pytest.fixture(autouse=True)
def _new_collections_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test removes the collections it made: Directus without a licence keeps 25 active per instance."""
    if "instances" not in request.fixturenames:
        yield
        return
    instances: dict[str, DirectusInstance] = request.getfixturevalue("instances")
    before = {name: _user_collections(instance) for name, instance in instances.items()}
    yield
    for name, instance in instances.items():
        made = _user_collections(instance) - before[name]
        # Relations first: a foreign key from another collection (a cycle's) keeps a table from being dropped.
        for relation in instance.api("GET", "/relations"):
            if relation["collection"] in made:
                instance.api("DELETE", f"/relations/{relation['collection']}/{relation['field']}")
        for collection in sorted(made):
            instance.api("DELETE", f"/collections/{collection}")


def _user_collections(instance: DirectusInstance) -> set[str]:
    return {c["collection"] for c in instance.api("GET", "/collections")
            if not c["collection"].startswith("directus_")}


@pytest.fixture
def collection() -> str:
    """A collection name of its own for each test, so tests share instances but not data."""
    return f"art_{uuid.uuid4().hex[:8]}"
