"""The apply step against the raw bulk loop, interleaved on one Directus instance.

    .venv/bin/python bench/apply_vs_raw.py --n 10000 --reps 3

The sync benchmark compares whole DAG runs with a raw ceiling measured minutes apart; this one isolates
the library's ``Applier`` (staged file, batching by count and bytes, pooled session, bounded requests in
flight) from extraction, planning and Airflow: for each action it writes the same N items once with the
raw loop and once with the ``Applier``, alternately, each into a fresh collection, with the same batch
size and two requests in flight, as the non-admin sync user. A ratio near 1 means the apply keeps
Directus as busy as raw requests do.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

# devtools/ (local Directus and Airflow) sits beside bench/ and is not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.devserver import PostgresDatabase, default_cache_dir, ensure_directus, running_instances
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.provision import provision
from directus_sync.engine.apply import DEFAULT_MAX_REQUEST_BYTES, Action, Applier, request_batches
from directus_sync.engine.plan import CollectionPlan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import FIELDS, make_item, send_batches

TOKEN, CONN_ID, IN_FLIGHT = "apply-bench-sync", "apply_bench_remote", 2
METHODS: dict[Action, str] = {"create": "POST", "update": "PATCH", "delete": "DELETE"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    database = PostgresDatabase(f"directus_sync_apply_bench_{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                running_instances(ensure_directus(default_cache_dir()), [("apply_bench", database)],
                                  Path(tmp) / "directus") as (remote,):
            measure(remote, Path(tmp), args.n, args.reps, args.batch_size)
    finally:
        database.drop()
    return 0


def measure(remote: Any, folder: Path, n: int, reps: int, batch_size: int) -> None:
    names = [f"c_{kind}_{rep}" for rep in range(reps) for kind in ("raw", "apply")]
    for name in names:
        remote.create_collection(name, FIELDS)
    provision(remote.url, remote.admin_token, names, token=TOKEN)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({"conn_type": "http", "host": remote.url,
                                                                "password": TOKEN})
    rng = random.Random(n)
    items = [{"id": k, **make_item(k, rng)} for k in range(1, n + 1)]
    updates = [{"id": k, **make_item(k, rng, version=1)} for k in range(1, n + 1)]
    payloads: dict[Action, list[Any]] = {"create": items, "update": updates, "delete": list(range(1, n + 1))}
    staged = {"create": items, "delete": payloads["delete"],
              "update": [{"key": u["id"], "changes": {f: v for f, v in u.items() if f != "id"}, "item": u}
                         for u in updates]}
    paths = {action: folder / f"{action}.jsonl" for action in METHODS}
    for action, path in paths.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in staged[action]))
    session = requests.Session()
    for action, method in METHODS.items():
        raw_rates, apply_rates = [], []
        for rep in range(reps):
            raw_rates.append(n / timed(raw, session, remote.url, method, f"c_raw_{rep}", payloads[action],
                                       batch_size))
            plan = CollectionPlan(collection=f"c_apply_{rep}", pk="id", fields=[f["field"] for f in FIELDS],
                                  creates_path=str(paths["create"]), updates_path=str(paths["update"]),
                                  deletes_path=str(paths["delete"]), creates=n, updates=n, deletes=n)
            applier = Applier(DirectusHook(CONN_ID), plan)
            apply_rates.append(n / timed(applier.run, action, batch_size, concurrency=IN_FLIGHT))
            if applier.outcome.written != n or applier.outcome.failures:
                raise SystemExit(f"the apply wrote {applier.outcome.written} of {n} {action}s: "
                                 f"{applier.outcome.failures[:3]}")
        raw_median, apply_median = statistics.median(raw_rates), statistics.median(apply_rates)
        print(f"{action:<6} raw {', '.join(f'{r:.0f}' for r in raw_rates)}/s | apply "
              f"{', '.join(f'{r:.0f}' for r in apply_rates)}/s | median apply/raw {apply_median / raw_median:.2f}",
              flush=True)


def raw(session: requests.Session, url: str, method: str, name: str, payload: list[Any], size: int) -> None:
    batches = list(request_batches(payload, size, DEFAULT_MAX_REQUEST_BYTES))
    send_batches(session, url, TOKEN, method, name, batches, IN_FLIGHT)


def timed(work: Any, *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    work(*args, **kwargs)
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
