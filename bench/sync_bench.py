"""Benchmark: directus-sync against the per-item approach and the bulk ceiling, on real instances.

    make bench                      # N = 1,000 and 10,000
    make bench BENCH_ARGS="--n 200" # the smoke size the test suite runs

Starts two Directus 12.4.0 instances on PostgreSQL (127.0.0.1:5432), and for each N measures, on a
collection of a dozen mixed fields (~1 KB an item):

1. directus-sync: the generated DAG through real Airflow (``airflow dags test``), one run per phase
   (first full copy, N updates, N deletes), timed from the moment its first task starts to the end of
   its last (extraction included), with the peak memory of the process that ran the tasks, and a run
   with no changes. Airflow's own ``run_duration`` is reported too: under ``dags test`` it also holds
   about 10 s of creating the run and starting the in-process API server, which a deployed Airflow does
   not spend per run;
2. per-item baseline: the original extension's strategy, one request per item, sequential;
3. ceiling: raw bulk requests of the best batch size found, straight to the remote.

Baseline and ceiling write to collections of their own on the same remote. Figures go to stdout and to
``bench/results/`` as JSON, Markdown and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import string
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from directus_sync import store
from directus_sync.apply import DEFAULT_MAX_REQUEST_BYTES, request_batches
from directus_sync.devserver import (
    DirectusInstance,
    PostgresDatabase,
    default_cache_dir,
    ensure_directus,
    exit_on_sigterm,
    running_instances,
)
from directus_sync.localairflow import AIRFLOW_BIN, LocalAirflow
from directus_sync.provision import provision

FIELDS: list[dict[str, Any]] = [
    {"field": "id", "type": "integer", "meta": {"hidden": True},
     "schema": {"is_primary_key": True, "has_auto_increment": True}},
    {"field": "title", "type": "string", "meta": {}, "schema": {}},
    {"field": "slug", "type": "string", "meta": {}, "schema": {}},
    {"field": "summary", "type": "text", "meta": {}, "schema": {}},
    {"field": "body", "type": "text", "meta": {}, "schema": {}},
    {"field": "views", "type": "integer", "meta": {}, "schema": {}},
    {"field": "rating", "type": "float", "meta": {}, "schema": {}},
    {"field": "price", "type": "decimal", "meta": {}, "schema": {"numeric_precision": 10, "numeric_scale": 2}},
    {"field": "published", "type": "boolean", "meta": {}, "schema": {}},
    {"field": "published_on", "type": "date", "meta": {}, "schema": {}},
    {"field": "updated_on", "type": "timestamp", "meta": {}, "schema": {}},
    {"field": "tags", "type": "json", "meta": {"special": ["cast-json"]}, "schema": {}},
    {"field": "author", "type": "string", "meta": {}, "schema": {}},
]
SYNCED = [f["field"] for f in FIELDS if f["field"] != "id"]
RESULTS = Path(__file__).resolve().parent / "results"


def make_item(n: int, rng: random.Random, version: int = 0) -> dict[str, Any]:
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(90))
    return {"title": f"Article {n} v{version}", "slug": f"article-{n}", "summary": words[:200], "body": words[:640],
            "views": n * 7 + version, "rating": round(rng.random() * 5, 2),
            "price": f"{rng.randint(1, 9999) / 100:.2f}",
            "published": n % 2 == 0, "published_on": "2026-11-26", "updated_on": "2026-11-26T12:00:00",
            "tags": ["bench", f"t{n % 10}", f"v{version}"], "author": f"author {n % 50}"}


class Bench:
    def __init__(self, source: DirectusInstance, remote: DirectusInstance, airflow: LocalAirflow) -> None:
        self.source, self.remote, self.airflow = source, remote, airflow
        self.session = requests.Session()

    # -- setup -------------------------------------------------------------------------------------

    def collection(self, instance: DirectusInstance, name: str) -> None:
        instance.api("POST", "/collections", json={"collection": name, "meta": {}, "schema": {}, "fields": FIELDS})

    def bulk(self, instance: DirectusInstance, method: str, name: str, payload: list[Any], size: int) -> None:
        """Bulk calls of ``size`` items, or fewer where Directus's 1 MB body limit demands it."""
        for batch in request_batches(payload, size, DEFAULT_MAX_REQUEST_BYTES):
            self.call(instance, method, f"/items/{name}", batch)

    def call(self, instance: DirectusInstance, method: str, path: str, payload: Any) -> None:
        response = self.session.request(method, instance.url + path, json=payload, params={"fields": "id"},
                                        headers={"Authorization": f"Bearer {instance.admin_token}"}, timeout=300)
        response.raise_for_status()

    # -- the three methods -------------------------------------------------------------------------

    def sync_run(self, dag_id: str) -> dict[str, float]:
        """One DAG run; its duration, the tasks' own time, and the peak memory of the process."""
        env = self.airflow.env()
        with tempfile.TemporaryFile("w+") as output:
            process = subprocess.Popen([AIRFLOW_BIN, "dags", "test", dag_id, datetime.now(UTC).isoformat()],
                                       env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            output.seek(0)
            log = output.read()
        if process.returncode != 0 or "state=success" not in log:
            raise SystemExit(f"{dag_id} failed:\n{log[-4000:]}")
        duration = float(re.findall(r"run_duration=([0-9.]+)", log)[-1])
        task_time = sum(float(t) for t in re.findall(r"directus-sync task time: ([0-9.]+) s", log))
        started = re.search(r"^(\S+Z) \[info\s*\] Task started", log, flags=re.MULTILINE)
        ended = re.findall(r"^(\S+Z) \[info\s*\] \[DAG TEST\] end task", log, flags=re.MULTILINE)
        assert started and ended, "the run's log has no task lines"
        span = datetime.fromisoformat(ended[-1]) - datetime.fromisoformat(started.group(1))
        return {"seconds": span.total_seconds(), "airflow_run_seconds": duration,
                "task_seconds": task_time, "peak_rss_mb": usage.ru_maxrss / 1024}

    def per_item(self, method: str, name: str, payloads: list[tuple[str, Any]]) -> float:
        started = time.perf_counter()
        for path, payload in payloads:
            self.call(self.remote, method, f"/items/{name}{path}", payload)
        return time.perf_counter() - started

    def ceiling(self, method: str, name: str, payload: list[Any], size: int) -> float:
        started = time.perf_counter()
        self.bulk(self.remote, method, name, payload, size)
        return time.perf_counter() - started

    def best_batch_size(self, n: int, rng: random.Random) -> int:
        """The create batch size that writes fastest on this remote, tried on a sample."""
        sample = [make_item(i, rng) for i in range(min(n, 2000))]
        timings = {}
        for size in (100, 250, 500, 1000):
            name = f"bench_probe_{size}_{n}"
            self.collection(self.remote, name)
            timings[size] = self.ceiling("POST", name, sample, size)
        best = min(timings, key=lambda s: timings[s])
        print(f"  ceiling batch sizes (s for {len(sample)} creates): {timings} -> {best}", flush=True)
        return best


def run_size(bench: Bench, n: int, engine: sa.engine.Engine) -> dict[str, Any]:
    rng = random.Random(n)
    name = f"bench_{n}"
    for instance in (bench.source, bench.remote):
        bench.collection(instance, name)
    for suffix in ("baseline", "ceiling"):
        bench.collection(bench.remote, f"{name}_{suffix}")
    for instance in (bench.source, bench.remote):
        token = f"bench-sync-{instance.name}"
        provision(instance.url, instance.admin_token, [name], token=token)
        bench.airflow.connections[f"bench_{instance.name}"] = {"conn_type": "http", "host": instance.url,
                                                                 "password": token}
    store.upsert_row(engine, {"name": name, "status": "published", "source_conn_id": f"bench_{bench.source.name}",
                              "remote_conn_id": f"bench_{bench.remote.name}", "retries": 0,
                              "schema": [{"name": name, "fields": SYNCED}]})
    dag_id = f"directus_sync__{name}"
    size = bench.best_batch_size(n, rng)
    result: dict[str, Any] = {"n": n, "ceiling_batch_size": size, "phases": {}}

    items = [{"id": i + 1, **make_item(i + 1, rng)} for i in range(n)]
    bench.bulk(bench.source, "POST", name, items, 1000)
    phases: list[tuple[str, Callable[[], None], str, list[tuple[str, Any]], list[Any]]] = [
        ("create", lambda: None, "POST", [("", item) for item in items], items),
    ]
    updated = [{"id": item["id"], **make_item(item["id"], rng, version=1)} for item in items]
    keys = [item["id"] for item in items]
    phases.append(("update", lambda: bench.bulk(bench.source, "PATCH", name, updated, 1000), "PATCH",
                   [(f"/{u['id']}", {k: v for k, v in u.items() if k != "id"}) for u in updated], updated))
    phases.append(("delete", lambda: bench.bulk(bench.source, "DELETE", name, keys, 1000), "DELETE",
                   [(f"/{k}", None) for k in keys], keys))
    for phase, change_source, method, singles, bulk_payload in phases:
        change_source()
        sync = bench.sync_run(dag_id)
        baseline = bench.per_item(method, f"{name}_baseline", singles)
        ceiling = bench.ceiling(method, f"{name}_ceiling", bulk_payload, size)
        figures = {
            "directus_sync_items_per_s": n / sync["seconds"], "directus_sync_seconds": sync["seconds"],
            "directus_sync_task_seconds": sync["task_seconds"], "peak_rss_mb": sync["peak_rss_mb"],
            "airflow_run_seconds": sync["airflow_run_seconds"],
            "baseline_items_per_s": n / baseline, "ceiling_items_per_s": n / ceiling,
        }
        figures["vs_baseline"] = figures["directus_sync_items_per_s"] / figures["baseline_items_per_s"]
        figures["vs_ceiling"] = figures["directus_sync_items_per_s"] / figures["ceiling_items_per_s"]
        result["phases"][phase] = figures
        print(f"  N={n} {phase:<6} directus-sync {figures['directus_sync_items_per_s']:7.0f}/s "
              f"(run {sync['seconds']:.1f} s, in tasks {sync['task_seconds']:.1f} s, dags test "
              f"{sync['airflow_run_seconds']:.1f} s, peak {sync['peak_rss_mb']:.0f} MB)"
              f" | per-item {figures['baseline_items_per_s']:6.0f}/s | ceiling {figures['ceiling_items_per_s']:6.0f}/s"
              f" | x{figures['vs_baseline']:.1f} baseline, {figures['vs_ceiling']:.2f} of ceiling", flush=True)
        if phase == "create":
            quiet = bench.sync_run(dag_id)
            result["no_change_run"] = quiet
            print(f"  N={n} no-change run: {quiet['seconds']:.1f} s, in tasks {quiet['task_seconds']:.2f} s",
                  flush=True)
    return result


def write_reports(results: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| N | phase | directus-sync items/s | per-item items/s | ceiling items/s | vs per-item | vs ceiling "
             "| peak MB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for phase, f in r["phases"].items():
            lines.append(f"| {r['n']:,} | {phase} | {f['directus_sync_items_per_s']:.0f} | "
                         f"{f['baseline_items_per_s']:.0f} | {f['ceiling_items_per_s']:.0f} | "
                         f"{f['vs_baseline']:.1f}x | {f['vs_ceiling']:.2f} | {f['peak_rss_mb']:.0f} |")
    lines += ["", "| N | no-change run (s, first task start to last task end) | time inside the tasks (s) |",
              "|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['no_change_run']['seconds']:.1f} | {r['no_change_run']['task_seconds']:.2f} |"
              for r in results]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return
    figure, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=False)
    for axis, phase in zip(axes, ("create", "update", "delete"), strict=True):
        ns = [r["n"] for r in results]
        for key, label in (("directus_sync_items_per_s", "directus-sync"), ("baseline_items_per_s", "per-item"),
                           ("ceiling_items_per_s", "bulk ceiling")):
            axis.plot(ns, [r["phases"][phase][key] for r in results], marker="o", label=label)
        axis.set_xscale("log")
        axis.set_title(phase)
        axis.set_xlabel("N items")
        axis.set_ylabel("items/s")
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the reports go")
    args = parser.parse_args()
    exit_on_sigterm()
    cli = ensure_directus(default_cache_dir())
    tag = os.getpid()
    databases = [(f"bench_{side}_{tag}", PostgresDatabase(f"directus_sync_bench_{tag}_{side}")) for side in "ab"]
    with tempfile.TemporaryDirectory(prefix="directus-sync-bench-") as tmp, \
            running_instances(cli, databases, Path(tmp) / "directus") as (source, remote):
        airflow = LocalAirflow(Path(tmp) / "airflow")
        table = Path(tmp) / "table.db"
        airflow.connections["directus_sync_db"] = {"conn_type": "sqlite", "host": str(table)}
        airflow.migrate()
        engine = sa.create_engine(f"sqlite:///{table}")
        store.migrate(engine)
        bench = Bench(source, remote, airflow)
        try:
            results = [run_size(bench, n, engine) for n in args.n]
        finally:
            for _, database in databases:
                source.stop()
                remote.stop()
                database.drop()
    write_reports(results, args.out)
    print(f"results: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
