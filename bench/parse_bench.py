"""Benchmark: what parsing the DAG file costs with N rows in the remote-sources table (PostgreSQL).

    python bench/parse_bench.py                     # 200 rows, 3 repeats
    python bench/parse_bench.py --rows 5 --repeat 1 # the smoke size the test suite runs

Creates a database of its own on PostgreSQL (127.0.0.1:5432, user postgres), points the package's table
connection at it (``AIRFLOW_CONN_DIRECTUS_SYNC_DB``), and inserts N published rows of 2-3 collections each,
a quarter with a reconcile DAG, a fifth in event mode. Then, each time in a fresh Python process with an
Airflow home of its own (no snapshot unless the case makes one), it loads ``dags/directus_sync_dags.py``
through Airflow's ``DagBag``:

1. ``full cold``: what the dag-processor does with no snapshot: reads the table, writes the snapshot;
2. ``full warm``: the same, in the home the cold parse left, whose snapshot is fresh: no table read;
3. ``worker``: what a worker does to run one task: the parsing context names one DAG, which is read from
   the table and built alone (no snapshot is read or written).

Each figure is the time spent in ``DagBag(...)`` (the file's import, which Airflow bounds by
``dagbag_import_timeout``, 30 s by default), measured inside the process; the whole process (interpreter,
Airflow import, DagBag) is reported beside it. Targets: a full parse under 5 s, a worker parse under 1 s,
judged on the slowest repeat (``--strict`` exits 1 when one is missed). ``--profile DIR`` writes a
cProfile of every ``DagBag(...)`` there and prints the top of the first full cold parse. Figures go to
stdout and to ``bench/results/parse/`` as JSON and Markdown, with the machine's load averages. The
database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "directus_sync_dags.py"
RESULTS = Path(__file__).resolve().parent / "results" / "parse"
PG_HOST = "postgresql://postgres@127.0.0.1:5432"
CASES = ("full cold", "full warm", "worker")
TARGETS = {"full cold": 5.0, "full warm": 5.0, "worker": 1.0}  # seconds in DagBag(...), slowest repeat
REGIONS = ("eu", "us", "asia", "au", "sa", "af", "ca", "jp")
COLLECTIONS = ("articles", "authors", "products", "orders", "pages", "events", "tags", "media_meta")
FIELDS = ("title", "slug", "summary", "body", "views", "rating", "price", "published", "author", "sku")


def rows(n: int) -> list[dict[str, Any]]:
    """N published rows, varied: 2-3 collections of 2-5 fields, some reconciled, some event-driven."""
    made = []
    for i in range(n):
        source, remote = REGIONS[i % len(REGIONS)], REGIONS[(i * 3 + 1) % len(REGIONS)]
        collections = [COLLECTIONS[(i + k * 3) % len(COLLECTIONS)] for k in range(2 + i % 2)]
        row: dict[str, Any] = {
            "name": f"{source}_to_{remote}_{i:04d}", "status": "published",
            "source_conn_id": f"directus_{source}", "remote_conn_id": f"directus_{remote}_{i % 7}",
            "schema": [{"name": c, "fields": list(FIELDS[(i + j) % 5:(i + j) % 5 + 2 + (i + j) % 4])}
                       for j, c in enumerate(collections)],
            "schedule": f"*/{5 + i % 10} * * * *",
            "notify_users": [f"user-{i % 3}"] if i % 2 else None,
        }
        if i % 4 == 0:
            row["reconcile_schedule"] = f"{i % 60} 3 * * *"
            row["reconcile_prune"] = i % 8 == 0
        if i % 5 == 0:
            row["trigger"] = "events"
        elif i % 10 == 3:
            row["trigger"] = "both"
        if i % 6 == 0:
            row["deadline"] = "15 minutes"
        made.append(row)
    return made


def expected_dags(made: list[dict[str, Any]]) -> int:
    return len(made) + sum(1 for r in made if r.get("reconcile_schedule"))


# -- the measured process ---------------------------------------------------------------------------------


def child(profile: str | None) -> int:
    """Run inside the fresh process: import Airflow, time DagBag over the DAG file, print one JSON line."""
    started = time.perf_counter()
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    from directus_sync.state import sources

    imported = time.perf_counter()
    snapshot = sources.Snapshot.default()
    age_before = snapshot.age()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    begin = time.perf_counter()
    bag = DagBag(dag_folder=str(DAG_FILE))
    seconds = time.perf_counter() - begin
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    print(json.dumps({
        "dagbag_seconds": seconds, "airflow_import_seconds": imported - started,
        "dags": len(bag.dags), "dag_ids": sorted(bag.dags)[:3], "import_errors": dict(bag.import_errors),
        "snapshot_age_before": age_before, "snapshot_after": snapshot.age() is not None,
        "dagbag_import_timeout": conf.getfloat("core", "dagbag_import_timeout"),
    }))
    return 0


def measure(case: str, home: Path, table_uri: str, dag_id: str, profile: Path | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "_AIRFLOW", "DIRECTUS_SYNC_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_DIRECTUS_SYNC_DB": table_uri,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "include"), env.get("PYTHONPATH")) if p),
    })
    if case == "worker":
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
        env["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] = "extract_changes"
    command = [sys.executable, __file__, "--child"]
    if profile is not None:
        command += ["--profile-to", str(profile)]
    begin = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - begin
    if result.returncode != 0:
        raise SystemExit(f"{case}: the parse process failed:\n{(result.stdout + result.stderr)[-4000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_seconds"] = wall
    figures["log_tail"] = result.stderr[-1500:]
    return figures


# -- the benchmark ----------------------------------------------------------------------------------------


def machine_load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def check(case: str, run: dict[str, Any], n_dags: int, dag_id: str, max_age: float) -> list[str]:
    """What is wrong with one measured parse (nothing, when the case did what it says)."""
    problems = []
    if run["import_errors"]:
        problems.append(f"import errors: {run['import_errors']}")
    want = 1 if case == "worker" else n_dags
    if run["dags"] != want:
        problems.append(f"{run['dags']} DAGs built, expected {want}\n{run['log_tail']}")
    if case == "worker" and run["dag_ids"] != [dag_id]:
        problems.append(f"built {run['dag_ids']}, expected {dag_id}")
    if case == "full cold" and (run["snapshot_age_before"] is not None or not run["snapshot_after"]):
        problems.append("the cold parse did not start without a snapshot and leave one")
    if case == "full warm" and not (run["snapshot_age_before"] is not None and run["snapshot_age_before"] < max_age):
        problems.append(f"the warm parse found no fresh snapshot (age {run['snapshot_age_before']})")
    if case == "worker" and (run["snapshot_age_before"] is not None or run["snapshot_after"]):
        problems.append("the worker parse saw or wrote a snapshot")
    return problems


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "max": max(values)}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Parse benchmark: {report['rows']} rows, {report['dags']} DAGs, {report['repeat']} repeats", "",
             f"Load average before {report['machine_before']}, after {report['machine_after']}.", "",
             "| case | DagBag median s | DagBag max s | process median s | max / import timeout | target | |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for case, figures in report["cases"].items():
        lines.append(f"| {case} | {figures['dagbag']['median']:.3f} | {figures['dagbag']['max']:.3f} | "
                     f"{figures['process']['median']:.2f} | {figures['of_timeout']:.1%} | "
                     f"< {figures['target']:g} s | {'PASS' if figures['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="published rows in the table")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the reports go")
    parser.add_argument("--profile", type=Path, help="write a cProfile of every DagBag(...) into this folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.profile_to)

    import psycopg2
    import sqlalchemy as sa

    sys.path.insert(0, str(REPO / "include"))
    from directus_sync.airflow.factory import REFRESH_ENV
    from directus_sync.config import dag_id_for
    from directus_sync.state import sources, tables

    database = f"directus_sync_parse_bench_{os.getpid()}"
    admin = psycopg2.connect(f"{PG_HOST}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{database}"')
    table_uri = f"{PG_HOST}/{database}"
    made = rows(args.rows)
    n_dags = expected_dags(made)
    dag_id = dag_id_for(made[len(made) // 2]["name"])
    max_age = float(os.environ.get(REFRESH_ENV, "30"))
    report: dict[str, Any] = {"rows": args.rows, "dags": n_dags, "repeat": args.repeat,
                              "machine_before": machine_load(), "worker_dag_id": dag_id}
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        engine = sa.create_engine(table_uri.replace("postgresql://", "postgresql+psycopg2://"))
        tables.migrate(engine)
        for row in made:
            sources.upsert_row(engine, row)
        engine.dispose()
        print(f"table: {args.rows} published rows in {database} -> {n_dags} DAGs; worker parses {dag_id}", flush=True)
        with tempfile.TemporaryDirectory(prefix="directus-sync-parse-bench-") as tmp:
            for i in range(args.repeat):
                homes = {"full": Path(tmp) / f"home_full_{i}", "worker": Path(tmp) / f"home_worker_{i}"}
                for case in CASES:  # cold first: the warm parse uses the snapshot it left
                    home = homes["worker" if case == "worker" else "full"]
                    profile = args.profile / f"{case.replace(' ', '_')}_{i}.pstats" if args.profile else None
                    run = measure(case, home, table_uri, dag_id, profile)
                    problems = check(case, run, n_dags, dag_id, max_age)
                    if problems:
                        raise SystemExit(f"{case} #{i + 1}: " + "; ".join(problems))
                    runs[case].append(run)
                    print(f"  {case:<9} #{i + 1}: DagBag {run['dagbag_seconds']:.3f} s, process "
                          f"{run['process_seconds']:.2f} s (Airflow import {run['airflow_import_seconds']:.2f} s), "
                          f"{run['dags']} DAGs, {len(run['import_errors'])} import errors", flush=True)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
    report["machine_after"] = machine_load()
    timeout = runs["full cold"][0]["dagbag_import_timeout"]
    report["dagbag_import_timeout"] = timeout
    report["cases"] = {}
    print(f"\nN={args.rows} rows, {n_dags} DAGs, {args.repeat} fresh processes per case; "
          f"dagbag_import_timeout {timeout:g} s")
    for case in CASES:
        dagbag, process = summarise(runs[case], "dagbag_seconds"), summarise(runs[case], "process_seconds")
        target = TARGETS[case]
        passed = dagbag["max"] < target
        report["cases"][case] = {"dagbag": dagbag, "process": process,
                                 "airflow_import": summarise(runs[case], "airflow_import_seconds"),
                                 "of_timeout": dagbag["max"] / timeout, "target": target, "passed": passed}
        print(f"  {case:<9} DagBag median {dagbag['median']:.3f} s, max {dagbag['max']:.3f} s | "
              f"whole process median {process['median']:.2f} s, max {process['max']:.2f} s | "
              f"max = {dagbag['max'] / timeout:.1%} of the import timeout, {dagbag['max'] / target:.2f}x "
              f"the {target:g} s target: {'PASS' if passed else 'FAIL'}")
    worker, full = report["cases"]["worker"]["dagbag"], report["cases"]["full cold"]["dagbag"]
    print(f"  worker / full cold (median DagBag): {worker['median'] / full['median']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(markdown(report))
    if args.profile:
        import pstats

        print(f"\nprofile of the first full cold parse ({args.profile}), top 25 by cumulative time:")
        pstats.Stats(str(args.profile / "full_cold_0.pstats")).sort_stats("cumulative").print_stats(25)
    print(f"results: {args.out / 'results.md'}")
    return 1 if args.strict and not all(c["passed"] for c in report["cases"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
