"""Memory bounded by bytes: items of 2 MB each, at the default batch_size of 1000, sync through real
Directus and real ``airflow dags test`` without the run's peak memory passing the bound the README states.

The bound (README, "Memory"): peak RSS <= baseline + K x DIRECTUS_SYNC_BATCH_BYTES x (READ_AHEAD + 1 +
write_concurrency), where the baseline is the same run's peak with tiny items. The runs are measured as
subprocesses through ``bench/peak_rss.py``, so the figure is the run's own.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools.devserver import DirectusInstance, PostgresDatabase, ensure_directus, running_instances
from directus_sync.config import DEFAULT_BATCH_BYTES
from directus_sync.engine.readahead import READ_AHEAD
from directus_sync.state import tables

from .conftest import RUN_TAG
from .harness import AIRFLOW, REPO, Airflow, create_collection

ITEMS = 60
ITEM_CHARS = 2_000_000
GROUP = 3  # items per request when the test itself writes them: ~6 MB
WRITE_CONCURRENCY = 2  # the default
# Bytes of memory per byte of budget in flight, measured (README, "Memory"): the answer's body, its text
# and the parsed items, and the staged records beside the remote's items in planning.
K = 3
FIELDS = ["title", "body", "views"]


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DirectusInstance, DirectusInstance, Airflow]]:
    """A source and a remote that take 10 MB bodies, and an Airflow home of their own."""
    names = ("ma", "mb")
    databases = {name: PostgresDatabase(f"directus_sync_e2e_{RUN_TAG}_{name}") for name in names}
    table_db = f"directus_sync_e2e_{RUN_TAG}_memtable"
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{table_db}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{table_db}"')
    conn.close()
    cli = ensure_directus(REPO / ".cache" / "directus")
    try:
        with running_instances(cli, list(databases.items()), tmp_path_factory.mktemp("roomy"),
                               settings={"MAX_PAYLOAD_SIZE": "10mb"}) as started:
            airflow = Airflow(home=Path(tmp_path_factory.mktemp("memory_airflow")), table_db=table_db)
            for instance in started:
                airflow.add_instance(instance)
            tables.migrate(airflow.engine())
            airflow.migrate()
            yield started[0], started[1], airflow
            airflow.engine().dispose()
    finally:
        for database in [*databases.values(), PostgresDatabase(table_db)]:
            database.drop()


def text(seed: str, chars: int) -> str:
    """``chars`` characters of varied text, the same for the same seed."""
    return random.Random(seed).randbytes(chars // 2).hex()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def write_items(instance: DirectusInstance, collection: str, method: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), GROUP):
        instance.api(method, f"/items/{collection}", json=items[start:start + GROUP])


def contents(instance: DirectusInstance, collection: str) -> dict[int, tuple[str, str, int]]:
    """Every item's title, body digest and views, read a few items at a time."""
    found: dict[int, tuple[str, str, int]] = {}
    while True:
        page = instance.api("GET", f"/items/{collection}", params={
            "limit": 5, "fields": "id,title,body,views", "sort": "id",
            **({"filter": json.dumps({"id": {"_gt": max(found)}})} if found else {})})
        found.update({i["id"]: (i["title"], digest(i["body"] or ""), i["views"]) for i in page})
        if len(page) < 5:
            return found


def peak_rss_kb(airflow: Airflow, dag_id: str, folder: Path) -> int:
    """Run the DAG once with ``airflow dags test`` and return the run's peak resident memory in kB."""
    out = folder / f"rss-{uuid.uuid4().hex}"
    command = [sys.executable, str(REPO / "bench" / "peak_rss.py"), str(out), AIRFLOW, "dags", "test", dag_id,
               datetime.now(UTC).isoformat()]
    result = subprocess.run(command, env=airflow.env(), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "state=success" in output, output[-6000:]
    return int(out.read_text())


def new_collection(source: DirectusInstance, remote: DirectusInstance, name: str) -> str:
    collection = f"mem_{name}_{uuid.uuid4().hex[:6]}"
    create_collection(source, collection)
    create_collection(remote, collection)
    return collection


def add_remote(airflow: Airflow, name: str, source: DirectusInstance, remote: DirectusInstance,
               collection: str) -> str:
    return airflow.add_remote(name=name, source_conn_id=f"directus_{source.name}",
                              remote_conn_id=f"directus_{remote.name}",
                              schema=[{"name": collection, "fields": FIELDS}])  # batch_size: the default, 1000


def test_two_megabyte_items_sync_within_the_stated_memory_bound(
        roomy: tuple[DirectusInstance, DirectusInstance, Airflow], tmp_path: Path) -> None:
    source, remote, airflow = roomy
    bound_over_baseline_kb = K * DEFAULT_BATCH_BYTES * (READ_AHEAD + 1 + WRITE_CONCURRENCY) // 1024

    # The baseline: the same runs (a full copy, then an update of every item) with tiny items.
    tiny = new_collection(source, remote, "tiny")
    write_items(source, tiny, "POST", [{"title": f"t{n}", "body": "b", "views": n} for n in range(ITEMS)])
    tiny_dag = add_remote(airflow, f"tiny_{tiny}", source, remote, tiny)
    baseline = [peak_rss_kb(airflow, tiny_dag, tmp_path)]
    write_items(source, tiny, "PATCH", [{"id": k, "body": "c"} for k in contents(source, tiny)])
    baseline.append(peak_rss_kb(airflow, tiny_dag, tmp_path))
    bound = max(baseline) + bound_over_baseline_kb

    big = new_collection(source, remote, "big")
    write_items(source, big, "POST", [{"title": f"t{n}", "body": text(f"first {n}", ITEM_CHARS), "views": n}
                                      for n in range(ITEMS)])
    wanted = contents(source, big)
    assert len(wanted) == ITEMS
    dag_id = add_remote(airflow, f"big_{big}", source, remote, big)

    first = peak_rss_kb(airflow, dag_id, tmp_path)
    assert contents(remote, big) == wanted  # every item arrived, byte-equal

    write_items(source, big, "PATCH", [{"id": k, "body": text(f"second {k}", ITEM_CHARS)} for k in wanted])
    changed = contents(source, big)
    assert all(changed[k][1] != wanted[k][1] for k in wanted)
    update = peak_rss_kb(airflow, dag_id, tmp_path)
    assert contents(remote, big) == changed

    figures = (f"baseline {baseline} kB, full copy {first} kB, update {update} kB, bound {bound} kB "
               f"(baseline + {K} x {DEFAULT_BATCH_BYTES} B x {READ_AHEAD + 1 + WRITE_CONCURRENCY})")
    print(figures)
    assert first <= bound, figures
    assert update <= bound, figures
