"""Latency benchmark of event mode under a real ``airflow standalone`` (scheduler, triggerer, LocalExecutor).

    .venv/bin/python bench/latency_bench.py                 # 20 edits, 5,000-item bulk create
    .venv/bin/python bench/latency_bench.py --edits 5 --bulk 500   # a quick look

Starts two Directus 12.4.0 instances on PostgreSQL (127.0.0.1:5432) and ``airflow standalone`` with its
metadata database on the same server, then measures, with nobody triggering any run:

1. single edits: one item's title changed on the source, timed until the remote shows it; each edit waits
   for the previous one's runs to finish, so every edit starts from an idle DAG (p50, p95, max);
2. a bulk create on the source (``--bulk`` items, POSTed in arrays of 500 as an import would), timed from
   its first request until the remote holds every item, and the number of runs it caused;
3. for comparison, a scheduled full run of the same number of items by a ``schedule``-mode remote
   (its first scheduled run after unpausing, a full copy), timed from its start to its end.

Figures go to stdout and to ``bench/results/latency.json`` and ``latency.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

# devtools/ (local Directus and Airflow) sits beside bench/ and is not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.devserver import (
    DirectusInstance,
    PostgresDatabase,
    default_cache_dir,
    ensure_directus,
    exit_on_sigterm,
    free_port,
    key_field,
    plain_field,
    running_instances,
)
from devtools.liveairflow import dag_runs, settled_runs, unpause_when_parsed, wait_for
from devtools.localairflow import LocalAirflow, Standalone
from directus_sync.directus.provision import provision
from directus_sync.state import sources, tables

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = [key_field(), plain_field("title"), plain_field("body", "text"), plain_field("views", "integer")]
SYNCED = ["title", "body", "views"]
IMPORT_BATCH = 500


def token(instance: DirectusInstance) -> str:
    return f"latency-sync-{instance.name}"


def create_collection(instance: DirectusInstance, name: str) -> None:
    instance.create_collection(name, FIELDS)
    provision(instance.url, instance.admin_token, [name], token=token(instance))


def count(instance: DirectusInstance, collection: str) -> int:
    data = instance.api("GET", f"/items/{collection}", params={"aggregate[count]": "id"})
    return int(data[0]["count"]["id"])


def bulk_create(instance: DirectusInstance, collection: str, n: int) -> None:
    for start in range(0, n, IMPORT_BATCH):
        instance.api("POST", f"/items/{collection}", params={"fields": "id"}, json=[
            {"title": f"item {i}", "body": "x" * 200, "views": i} for i in range(start, min(n, start + IMPORT_BATCH))])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 20 values, p95 is the 19th smallest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def measure_edits(server: Standalone, source: DirectusInstance, remote: DirectusInstance, collection: str,
                  dag_id: str, edits: int) -> list[float]:
    key = source.api("POST", f"/items/{collection}", json={"title": "first", "views": 0})["id"]
    wait_for(lambda: remote.api("GET", f"/items/{collection}", params={"filter[id][_eq]": key}), 300,
             "the first item on the remote")
    latencies = []
    for n in range(edits):
        settled_runs(server, dag_id, quiet=3)
        title = f"edit {n} {time.time()}"
        started = time.monotonic()
        source.api("PATCH", f"/items/{collection}/{key}", json={"title": title})
        wait_for(lambda t=title: remote.api("GET", f"/items/{collection}/{key}", params={"fields": "title"}
                                            )["title"] == t, 300, f"edit {n} on the remote", every=0.1)
        latencies.append(time.monotonic() - started)
        print(f"  edit {n + 1:2d}: {latencies[-1]:.1f} s", flush=True)
    return latencies


def measure_bulk(server: Standalone, source: DirectusInstance, remote: DirectusInstance, collection: str,
                 dag_id: str, n: int) -> dict[str, Any]:
    runs_before = len(settled_runs(server, dag_id, quiet=3))
    started = time.monotonic()
    bulk_create(source, collection, n)
    imported = time.monotonic() - started
    expected = count(source, collection)
    wait_for(lambda: count(remote, collection) == expected, 1800, f"{n} items on the remote", every=0.5)
    arrived = time.monotonic() - started
    runs = len(settled_runs(server, dag_id, quiet=5)) - runs_before
    return {"items": n, "import_s": round(imported, 1), "arrived_s": round(arrived, 1),
            "after_import_s": round(arrived - imported, 1), "runs": runs}


def measure_scheduled_full_run(server: Standalone, source: DirectusInstance, remote: DirectusInstance,
                               collection: str, dag_id: str, n: int) -> dict[str, Any]:
    bulk_create(source, collection, n)
    unpause_when_parsed(server, dag_id)  # catchup is off: the latest interval runs at once, as a full copy
    expected = count(source, collection)
    wait_for(lambda: count(remote, collection) == expected, 1800, f"{n} items by the scheduled run", every=0.5)
    run = wait_for(lambda: next((r for r in dag_runs(server, dag_id) if r["state"] == "success"), None), 600,
                   "the scheduled run's end")
    return {"items": n, "run_type": run["run_type"],
            "run_s": round(seconds_between(run["start_date"], run["end_date"]), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--bulk", type=int, default=5000)
    parser.add_argument("--poll", type=float, default=2.0, help="event_poll_seconds of the event-mode remote")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    exit_on_sigterm()
    cli = ensure_directus(default_cache_dir())
    tag = os.getpid()
    databases = [(f"lat_{side}_{tag}", PostgresDatabase(f"directus_sync_latency_{tag}_{side}")) for side in "ab"]
    metadata_db = PostgresDatabase(f"directus_sync_latency_{tag}_airflow")
    metadata_db.recreate()
    try:
        with tempfile.TemporaryDirectory(prefix="directus-sync-latency-") as tmp, \
                running_instances(cli, databases, Path(tmp) / "directus") as (source, remote):
            results = run(Path(tmp), source, remote, metadata_db, args)
    finally:
        metadata_db.drop()
        for _, database in databases:
            database.drop()
    write_reports(results, args.out)
    return 0


def run(tmp: Path, source: DirectusInstance, remote: DirectusInstance, metadata_db: PostgresDatabase,
        args: argparse.Namespace) -> dict[str, Any]:
    for instance in (source, remote):
        for collection in ("edits", "bulk_events", "bulk_scheduled"):
            create_collection(instance, collection)
    airflow = LocalAirflow(tmp / "airflow", extra_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.url,
                                                       "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    table = tmp / "table.db"
    airflow.connections["directus_sync_db"] = {"conn_type": "sqlite", "host": str(table)}
    for instance in (source, remote):
        airflow.connections[f"directus_{instance.name}"] = {"conn_type": "http", "host": instance.url,
                                                            "password": token(instance)}
    engine = sa.create_engine(f"sqlite:///{table}")
    tables.migrate(engine)
    common = {"status": "published", "source_conn_id": f"directus_{source.name}",
              "remote_conn_id": f"directus_{remote.name}", "retries": 0}
    for name, collection, mode in (("lat_edits", "edits", "events"), ("lat_bulk", "bulk_events", "events"),
                                   ("lat_sched", "bulk_scheduled", "schedule")):
        sources.upsert_row(engine, {**common, "name": name, "schema": [{"name": collection, "fields": SYNCED}],
                                  "trigger": mode, "event_poll_seconds": args.poll, "schedule": "@hourly"})
    with airflow.standalone(port=free_port()) as server:
        print(f"airflow standalone at {server.url}", flush=True)
        for dag_id in ("directus_sync__lat_edits", "directus_sync__lat_bulk"):
            unpause_when_parsed(server, dag_id)
        print(f"{args.edits} single edits:", flush=True)
        latencies = measure_edits(server, source, remote, "edits", "directus_sync__lat_edits", args.edits)
        print(f"bulk create of {args.bulk} items:", flush=True)
        bulk = measure_bulk(server, source, remote, "bulk_events", "directus_sync__lat_bulk", args.bulk)
        print(f"  {bulk}", flush=True)
        print(f"scheduled full run of {args.bulk} items:", flush=True)
        scheduled = measure_scheduled_full_run(server, source, remote, "bulk_scheduled", "directus_sync__lat_sched",
                                               args.bulk)
        print(f"  {scheduled}", flush=True)
    return {
        "poll_seconds": args.poll,
        "edits": {"n": len(latencies), "p50_s": round(statistics.median(latencies), 1),
                  "p95_s": round(percentile(latencies, 95), 1), "max_s": round(max(latencies), 1),
                  "all_s": [round(v, 1) for v in latencies]},
        "bulk_events": bulk,
        "scheduled_full_run": scheduled,
        "bulk_vs_scheduled": round(bulk["arrived_s"] / scheduled["run_s"], 2),
        "bulk_after_import_vs_scheduled": round(bulk["after_import_s"] / scheduled["run_s"], 2),
    }


def write_reports(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(results, indent=2) + "\n")
    edits, bulk, scheduled = results["edits"], results["bulk_events"], results["scheduled_full_run"]
    lines = [
        f"| measure (event mode, poll {results['poll_seconds']:g} s) | result |", "| --- | --- |",
        f"| single edit, source to remote ({edits['n']} edits) | p50 {edits['p50_s']} s, p95 {edits['p95_s']} s, "
        f"max {edits['max_s']} s |",
        f"| bulk create of {bulk['items']:,} items, first request to all on the remote | {bulk['arrived_s']} s "
        f"(import itself {bulk['import_s']} s), {bulk['runs']} runs |",
        f"| scheduled full run of {scheduled['items']:,} items (start to end) | {scheduled['run_s']} s |",
        f"| bulk in event mode / scheduled full run | {results['bulk_vs_scheduled']}x from the first request, "
        f"{results['bulk_after_import_vs_scheduled']}x from the import's end "
        f"({bulk['after_import_s']} s) |",
    ]
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
