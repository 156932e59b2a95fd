"""Benchmark: directus-sync against the per-item approach and the bulk ceiling, on real instances.

    make bench                      # N = 1,000 and 10,000
    make bench BENCH_ARGS="--n 200" # the smoke size the test suite runs
    make bench BENCH_ARGS="--n 10000 --shapes items relational --methods sync ceiling"

Starts two Directus 12.4.0 instances on PostgreSQL (127.0.0.1:5432), and for each N measures, on a
collection of a dozen mixed fields (~1 KB an item):

1. directus-sync: the generated DAG through real Airflow (``airflow dags test``), one run per phase
   (first full copy, N updates, N deletes), timed from the moment its first task starts to the end of
   its last (extraction included), with the peak memory of the process that ran the tasks, and a run
   with no changes. Airflow's own ``run_duration`` is reported too: under ``dags test`` it also holds
   about 10 s of creating the run and starting the in-process API server, which a deployed Airflow does
   not spend per run;
2. per-item baseline: the original extension's strategy, one request per item, sequential;
3. ceiling: raw bulk requests of the best batch size found, straight to the remote, one at a time and
   as many at a time as directus-sync sends (``write_concurrency``); ratios use the faster of the two.
   The parallel one is measured just before and just after each sync run and combined (total items over
   total time), so that the instances' drift during a phase weighs on both sides of the ratio.

``--shapes relational`` (or ``items relational``) measures the same on relational content: N authors,
N/10 tags, N articles with a many-to-one ``author`` and a many-to-many ``tags`` listed as the alias (the run
syncs the junction behind it), one link per article; create copies all four collections, update changes
every article (its author too) and every link, delete removes every article (and its links) and every
author. Its rates count the items of every collection, for all three methods alike; baseline and ceiling
write the same items in the same dependency order, each collection's batches in flight before the next.

Baseline and ceiling write to collections of their own on the same remote, as the remote's sync user
(the non-admin user directus-sync writes as: its writes cost Directus permission checks that an admin's
skip). Figures go to stdout and to ``bench/results/`` as JSON, Markdown and a PNG chart, with the
machine's load averages (timings on a busy machine are noisy: compare the ratios, measured minutes apart
on the same instances).

The no-change run must find its window empty: the sync row runs every minute with a 5 s overlap, and the
script waits until the source's last activity is older than the run's window (about two minutes).
``--profile DIR`` records every directus-sync run with ``py-spy record --subprocesses`` (raw stacks,
one file per run; peak memory then includes py-spy's own). ``--logs DIR`` keeps each run's ``dags test``
output, with the time of every task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# devtools/ (local Directus and Airflow) sits beside bench/ and is not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.devserver import (
    DirectusInstance,
    PostgresDatabase,
    default_cache_dir,
    ensure_directus,
    exit_on_sigterm,
    key_field,
    plain_field,
    running_instances,
)
from devtools.localairflow import AIRFLOW_BIN, LocalAirflow
from directus_sync.config import RemoteSource
from directus_sync.directus.provision import provision
from directus_sync.engine.apply import DEFAULT_MAX_REQUEST_BYTES, request_batches
from directus_sync.state import sources, tables

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
PEAK_RSS = Path(__file__).resolve().parent / "peak_rss.py"
METHODS = ("sync", "baseline", "ceiling")
# The bench's sync row: runs every minute, a short overlap, so that a quiet window comes soon.
SCHEDULE, OVERLAP_SECONDS = "* * * * *", 5
PROBE_SIZES = (100, 250, 500, 1000)  # batch sizes the ceiling tries
WRITE_CONCURRENCY: int = RemoteSource.model_fields["write_concurrency"].default
BATCH_SIZE: int = RemoteSource.model_fields["batch_size"].default
PHASES = ("create", "update", "delete")
SHAPES = ("items", "relational")
# The relational shape: authors <- articles (many-to-one ``author``) -> tags (many-to-many alias ``tags`` through
# the junction ``articles_tags``). Articles have the items' fields but the two that the relations replace.
ARTICLE_FIELDS = [f for f in FIELDS if f["field"] not in ("tags", "author")]
AUTHOR_FIELDS = [key_field(), plain_field("name"), plain_field("bio", "text")]
TAG_FIELDS = [key_field(), plain_field("label")]
JUNCTION_KEYS = ("articles_id", "tags_id")
ROLES = ("authors", "tags", "articles", "articles_tags")  # the relational collections, in dependency order
# One write of a phase: the collection's role ("" for the items' one collection), the HTTP method, the payload.
Step = tuple[str, str, list[Any]]


class RateColumn(ProgressColumn):
    """Items per second of a step that counts items (nothing for a wait or a run of unknown length)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} items/s" if speed and task.fields.get("rate") else "", style="progress.data.speed")


# Live progress on stderr while a step runs (done of N, rate, elapsed, ETA); it draws only on a terminal and
# leaves nothing behind, so that stdout keeps the figures alone, also when piped.
_STDERR = Console(stderr=True)
PROGRESS = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=_STDERR, transient=True, disable=not _STDERR.is_terminal)


@contextmanager
def step(description: str, total: float | None, rate: bool = True) -> Iterator[Callable[[float], None]]:
    """A progress line for one step while it runs; yields ``advance(done)``. ``total=None``: a spinner."""
    task = PROGRESS.add_task(description, total=total, rate=rate)
    try:
        yield lambda done: PROGRESS.advance(task, done)
    finally:
        PROGRESS.remove_task(task)


def send(session: requests.Session, url: str, token: str, method: str, payload: Any) -> None:
    """One raw call, as the baseline and the ceiling make it."""
    response = session.request(method, url, json=payload, params={"fields": "id"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=300)
    response.raise_for_status()


def send_batches(session: requests.Session, url: str, token: str, method: str, name: str,
                 batches: Iterable[list[Any]], in_flight: int,
                 done: Callable[[float], None] = lambda items: None) -> None:
    """One raw bulk call per batch on ``/items/{name}``, ``in_flight`` at a time; ``done(items)`` after each."""
    def one(batch: list[Any]) -> None:
        send(session, f"{url}/items/{name}", token, method, batch)
        done(len(batch))

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(one, batches))


def make_item(n: int, rng: random.Random, version: int = 0) -> dict[str, Any]:
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(90))
    return {"title": f"Article {n} v{version}", "slug": f"article-{n}", "summary": words[:200], "body": words[:640],
            "views": n * 7 + version, "rating": round(rng.random() * 5, 2),
            "price": f"{rng.randint(1, 9999) / 100:.2f}",
            "published": n % 2 == 0, "published_on": "2026-11-26", "updated_on": "2026-11-26T12:00:00",
            "tags": ["bench", f"t{n % 10}", f"v{version}"], "author": f"author {n % 50}"}


class Bench:
    def __init__(self, source: DirectusInstance, remote: DirectusInstance, airflow: LocalAirflow,
                 methods: tuple[str, ...] = METHODS, profile: Path | None = None,
                 logs: Path | None = None) -> None:
        self.source, self.remote, self.airflow = source, remote, airflow
        self.methods, self.profile, self.logs = methods, profile, logs
        self.last_phase = "delete"
        self.write_concurrency = WRITE_CONCURRENCY
        self.session = requests.Session()
        # Baseline and ceiling write as the remote's sync user, like directus-sync and the original
        # extension: a non-admin user's writes cost Directus permission checks that an admin's skip.
        self.remote_token = remote.admin_token
        self.last_source_change = time.time()
        self.phase_done: Callable[[], None] = lambda: None  # the overall progress: one phase of one N more
        self.batch_sizes: dict[int, int] = {}  # the ceiling's best batch size at each N
        self.probes: set[int] = set()  # the Ns whose probe collections exist on the remote

    # -- setup -------------------------------------------------------------------------------------

    def collection(self, instance: DirectusInstance, name: str) -> None:
        instance.create_collection(name, FIELDS)

    def bulk(self, instance: DirectusInstance, method: str, name: str, payload: list[Any], size: int) -> None:
        """Bulk calls of ``size`` items (fewer where Directus's 1 MB body limit demands it), two in flight."""
        with step(f"{method} {len(payload):,} items on {instance.name}/{name}", len(payload)) as advance:
            self.send_all(instance, method, name, request_batches(payload, size, DEFAULT_MAX_REQUEST_BYTES), 2,
                          advance)
        if instance is self.source:
            self.last_source_change = time.time()

    def wait_for_quiet_window(self, lookback: float) -> None:
        """Sleep until a manual run's window, reaching ``lookback`` seconds before the start of the current
        minute, no longer holds the source's last change (activity timestamps have a 1 s margin)."""
        ready = (math.floor((self.last_source_change + 1 + lookback) / 60) + 1) * 60
        if (pause := ready - time.time()) > 0:
            print(f"  waiting {pause:.0f} s for the source's changes to leave the sync window", flush=True)
            with step("waiting for a quiet sync window (s)", round(pause), rate=False) as advance:
                end = time.monotonic() + pause
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(1.0, left))
                    advance(min(1.0, left))

    def send_all(self, instance: DirectusInstance, method: str, name: str, batches: Iterable[list[Any]],
                 in_flight: int, done: Callable[[float], None] = lambda items: None) -> None:
        """One bulk call per batch on ``/items/{name}``, ``in_flight`` at a time; ``done(items)`` after each."""
        send_batches(self.session, instance.url, self.token(instance), method, name, batches, in_flight, done)

    def call(self, instance: DirectusInstance, method: str, path: str, payload: Any) -> None:
        send(self.session, instance.url + path, self.token(instance), method, payload)

    def token(self, instance: DirectusInstance) -> str:
        return self.remote_token if instance is self.remote else instance.admin_token

    # -- the three methods -------------------------------------------------------------------------

    def sync_run(self, dag_id: str, label: str) -> dict[str, float]:
        """One DAG run; its duration, the tasks' own time, and the peak memory of the process."""
        env = self.airflow.env()
        command = [AIRFLOW_BIN, "dags", "test", dag_id, datetime.now(UTC).isoformat()]
        if self.profile:
            self.profile.mkdir(parents=True, exist_ok=True)
            py_spy = shutil.which("py-spy", path=str(Path(AIRFLOW_BIN).parent)) or "py-spy"
            command = [py_spy, "record", "--subprocesses", "--idle", "--format", "raw", "--rate", "50",
                       "--output", str(self.profile / f"{label}.txt"), "--", *command]
        with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryDirectory() as scratch:
            peak_file = Path(scratch) / "peak_rss_kb"
            with step(f"directus-sync run {label} (airflow dags test)", None, rate=False):
                returncode = subprocess.call([sys.executable, str(PEAK_RSS), str(peak_file), *command], env=env,
                                             stdout=output, stderr=subprocess.STDOUT)
            output.seek(0)
            log = output.read()
            peak_kb = int(peak_file.read_text()) if peak_file.exists() else 0
        if self.logs:
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.logs / f"{label}.log").write_text(log)
        if returncode != 0 or "state=success" not in log:
            raise SystemExit(f"{dag_id} failed:\n{log[-4000:]}")
        duration = float(re.findall(r"run_duration=([0-9.]+)", log)[-1])
        task_time = sum(float(t) for t in re.findall(r"directus-sync task time: ([0-9.]+) s", log))
        started = re.search(r"^(\S+Z) \[info\s*\] Task started", log, flags=re.MULTILINE)
        ended = re.findall(r"^(\S+Z) \[info\s*\] \[DAG TEST\] end task", log, flags=re.MULTILINE)
        assert started and ended, "the run's log has no task lines"
        span = datetime.fromisoformat(ended[-1]) - datetime.fromisoformat(started.group(1))
        activity = sum(int(n) for n in re.findall(r"Read (\d+) activity rows", log))
        return {"seconds": span.total_seconds(), "airflow_run_seconds": duration,
                "task_seconds": task_time, "peak_rss_mb": peak_kb / 1024, "activity_rows": activity}

    def per_item(self, steps: list[Step], name: str) -> float:
        """Seconds to write ``steps`` one item per request, sequentially, into the collections of ``name``."""
        calls = [(method, target(name, role), path, body) for role, method, payload in steps
                 for path, body in singles(method, payload)]
        with step(f"per-item {steps[0][1]} on {name}", len(calls)) as advance:
            started = time.perf_counter()
            for method, collection, path, body in calls:
                self.call(self.remote, method, f"/items/{collection}{path}", body)
                advance(1)
            return time.perf_counter() - started

    def ceiling(self, steps: list[Step], name: str, size: int, in_flight: int = 1) -> float:
        """Seconds to write ``steps`` (one after the other) with raw bulk requests of ``size``, ``in_flight`` at
        a time, into the collections of ``name``."""
        # Cut before the clock starts.
        cut = [(method, target(name, role), list(request_batches(payload, size, DEFAULT_MAX_REQUEST_BYTES)))
               for role, method, payload in steps]
        total = sum(len(payload) for _, _, payload in steps)
        with step(f"ceiling {steps[0][1]} on {name}, {in_flight} in flight", total) as advance:
            started = time.perf_counter()
            for method, collection, batches in cut:
                self.send_all(self.remote, method, collection, batches, in_flight, advance)
            return time.perf_counter() - started

    def best_batch_size(self, n: int, rng: random.Random) -> int:
        """The create batch size that writes fastest on this remote, tried on a sample (once per N: the
        relational shape at an N the items shape measured reuses its size)."""
        if n in self.batch_sizes:
            return self.batch_sizes[n]
        sample = [make_item(i, rng) for i in range(min(n, 2000))]
        timings = {}
        for size in PROBE_SIZES:
            timings[size] = self.ceiling([("", "POST", sample)], f"bench_probe_{size}_{n}", size)
        best = min(timings, key=lambda s: timings[s])
        print(f"  ceiling batch sizes (s for {len(sample)} creates): {timings} -> {best}", flush=True)
        self.batch_sizes[n] = best
        return best

    def change_source(self, name: str, steps: list[Step]) -> None:
        """Make a phase's change on the source, in bulk."""
        for role, method, payload in steps:
            self.bulk(self.source, method, target(name, role), payload, 1000)


def target(name: str, role: str) -> str:
    """The collection of ``role`` in the collections of ``name`` (``name`` itself for the items' shape)."""
    return f"{name}_{role}" if role else name


def singles(method: str, payload: list[Any]) -> list[tuple[str, Any]]:
    """The per-item calls (path after the collection, body) that write ``payload`` one item at a time."""
    if method == "POST":
        return [("", item) for item in payload]
    if method == "PATCH":
        return [(f"/{u['id']}", {k: v for k, v in u.items() if k != "id"}) for u in payload]
    return [(f"/{k}", None) for k in payload]


def setup_size(bench: Bench, n: int, engine: sa.engine.Engine) -> str:
    """The collections of size ``n`` on both instances, sync users, connections and the sync row."""
    name = f"bench_{n}"
    for instance in (bench.source, bench.remote):
        bench.collection(instance, name)
    own = [f"{name}_{suffix}" for suffix in ("baseline", "ceiling", "ceiling2", "ceiling2b")]
    for collection in own:
        bench.collection(bench.remote, collection)
    register(bench, engine, name, [name], [*own, *probes(bench, n)], [{"name": name, "fields": SYNCED}])
    return name


def probes(bench: Bench, n: int) -> list[str]:
    """The remote's collections the ceiling's batch size is tried on at ``n``, created once."""
    names = [f"bench_probe_{size}_{n}" for size in PROBE_SIZES]
    if n not in bench.probes and "ceiling" in bench.methods:
        for collection in names:
            bench.collection(bench.remote, collection)
        bench.probes.add(n)
        return names
    return []


def register(bench: Bench, engine: sa.engine.Engine, name: str, synced: list[str], remote_only: list[str],
             schema: list[dict[str, Any]]) -> None:
    """The sync users (granted ``synced`` on both instances, ``remote_only`` on the remote too), their
    connections, and the sync row ``name`` with ``schema``."""
    for instance in (bench.source, bench.remote):
        token = f"bench-sync-{instance.name}"
        provision(instance.url, instance.admin_token,
                  [*synced, *remote_only] if instance is bench.remote else synced, token=token)
        bench.airflow.connections[f"bench_{instance.name}"] = {"conn_type": "http", "host": instance.url,
                                                                 "password": token}
    sources.upsert_row(engine, {"name": name, "status": "published", "source_conn_id": f"bench_{bench.source.name}",
                              "remote_conn_id": f"bench_{bench.remote.name}", "retries": 0,
                              "schedule": SCHEDULE, "overlap_seconds": OVERLAP_SECONDS,
                              "write_concurrency": bench.write_concurrency, "schema": schema})
    bench.remote_token = f"bench-sync-{bench.remote.name}"


def relational_collections(instance: DirectusInstance, name: str) -> list[str]:
    """Authors, tags, articles (``author`` -> authors, ``tags`` -> tags through the junction) named after
    ``name``, as the Data Studio makes them; returns the four collections in dependency order."""
    authors, tags, articles, junction = (target(name, role) for role in ROLES)
    instance.create_collection(authors, AUTHOR_FIELDS)
    instance.create_collection(tags, TAG_FIELDS)
    instance.create_collection(articles, ARTICLE_FIELDS)
    instance.create_many_to_one(articles, "author", authors)
    instance.create_many_to_many(articles, "tags", tags, junction, keys=JUNCTION_KEYS)
    return [authors, tags, articles, junction]


def setup_relational(bench: Bench, n: int, engine: sa.engine.Engine) -> str:
    """The relational collections of size ``n`` on both instances (and the remote's own for the other
    methods), sync users, connections and the sync row, which lists the alias ``tags`` (not the junction)."""
    name = f"bench_rel_{n}"
    for instance in (bench.source, bench.remote):
        synced = relational_collections(instance, name)
    suffixes = (["baseline"] if "baseline" in bench.methods else []) + (
        ["ceiling", "ceiling2", "ceiling2b"] if "ceiling" in bench.methods else [])
    own = [c for suffix in suffixes for c in relational_collections(bench.remote, f"{name}_{suffix}")]
    article_fields = [f["field"] for f in ARTICLE_FIELDS if f["field"] != "id"] + ["author", "tags"]
    register(bench, engine, name, synced, [*own, *probes(bench, n)], [
        {"name": target(name, "articles"), "fields": article_fields},
        {"name": target(name, "authors"), "fields": ["name", "bio"]},
        {"name": target(name, "tags"), "fields": ["label"]}])
    return name


def item_changes(n: int, rng: random.Random) -> dict[str, list[Step]]:
    """Each phase's writes on the items' one collection: N creates, N updates, N deletes."""
    items = [{"id": i + 1, **make_item(i + 1, rng)} for i in range(n)]
    updated = [{"id": item["id"], **make_item(item["id"], rng, version=1)} for item in items]
    return {"create": [("", "POST", items)], "update": [("", "PATCH", updated)],
            "delete": [("", "DELETE", [item["id"] for item in items])]}


def relational_changes(n: int, rng: random.Random) -> dict[str, list[Step]]:
    """Each phase's writes on the relational collections, in dependency order.

    create: N authors, N/10 tags, N articles (each with an author), N links (one tag each); update: the N
    articles (fields and author) and the N links (another tag); delete: the N articles (their links go with
    them, on both instances, by the junction's cascade) and the N authors.
    """
    tags = max(1, n // 10)

    def article(k: int, version: int) -> dict[str, Any]:
        item = {f: v for f, v in make_item(k, rng, version).items() if f not in ("tags", "author")}
        return {"id": k, **item, "author": (k + version - 1) % n + 1}

    authors = [{"id": k, "name": f"Author {k}", "bio": f"Writes article {k}. " * 8} for k in range(1, n + 1)]
    labels = [{"id": k, "label": f"tag {k}"} for k in range(1, tags + 1)]
    links = [{"id": k, JUNCTION_KEYS[0]: k, JUNCTION_KEYS[1]: k % tags + 1} for k in range(1, n + 1)]
    relinked = [{"id": k, JUNCTION_KEYS[1]: (k + 1) % tags + 1} for k in range(1, n + 1)]
    keys = list(range(1, n + 1))
    return {"create": [("authors", "POST", authors), ("tags", "POST", labels),
                       ("articles", "POST", [article(k, 0) for k in keys]), ("articles_tags", "POST", links)],
            "update": [("articles", "PATCH", [article(k, 1) for k in keys]), ("articles_tags", "PATCH", relinked)],
            "delete": [("articles", "DELETE", keys), ("authors", "DELETE", keys)]}


def run_size(bench: Bench, n: int, engine: sa.engine.Engine, shape: str = "items") -> dict[str, Any]:
    rng = random.Random(n)
    name = (setup_size if shape == "items" else setup_relational)(bench, n, engine)
    size = bench.best_batch_size(n, rng) if "ceiling" in bench.methods else BATCH_SIZE
    result: dict[str, Any] = {"n": n, "shape": shape, "ceiling_batch_size": size, "phases": {}}
    changes = (item_changes if shape == "items" else relational_changes)(n, rng)
    bench.change_source(name, changes["create"])
    for phase, steps in changes.items():
        if phase != "create":
            bench.change_source(name, steps)
        figures = run_phase(bench, n, f"{name}_{phase}", steps, size, shape)
        result["phases"][phase] = figures
        bench.phase_done()
        if phase == "create" and "sync" in bench.methods and shape == "items":
            result["no_change_run"] = no_change_run(bench, n, name)
        if phase == bench.last_phase:
            break
    return result


def run_phase(bench: Bench, n: int, label: str, steps: list[Step], size: int,
              shape: str = "items") -> dict[str, float]:
    """One phase by each chosen method, in items per second (items of every step), with the ratios."""
    count = sum(len(payload) for _, _, payload in steps)
    name, phase = label.rsplit("_", 1)
    figures: dict[str, float] = {"items": count}
    in_flight = max(2, bench.write_concurrency)
    if "sync" in bench.methods:
        if phase == "create":  # the full copy's window must not hold the load (see the no-change run)
            bench.wait_for_quiet_window(OVERLAP_SECONDS)
        if "ceiling" in bench.methods:
            # The parallel ceiling is measured just before the sync and just after it, and combined: the
            # instances drift (PostgreSQL's autovacuum after a bulk change, Node's warm-up), and a ceiling
            # taken on one side of the sync only would carry that drift into the ratio.
            figures["ceiling_parallel_before_items_per_s"] = count / bench.ceiling(
                steps, f"{name}_ceiling2b", size, in_flight)
        sync = bench.sync_run(f"directus_sync__{name}", label)
        figures.update({"directus_sync_items_per_s": count / sync["seconds"], "directus_sync_seconds": sync["seconds"],
                        "directus_sync_task_seconds": sync["task_seconds"], "peak_rss_mb": sync["peak_rss_mb"],
                        "airflow_run_seconds": sync["airflow_run_seconds"]})
    if "baseline" in bench.methods:
        figures["baseline_items_per_s"] = count / bench.per_item(steps, f"{name}_baseline")
    if "ceiling" in bench.methods:
        # Sequential, as the issue defines it, and with as many requests in flight as directus-sync sends:
        # the ratio is taken against the faster, so that concurrency alone cannot flatter it.
        figures["ceiling_sequential_items_per_s"] = count / bench.ceiling(steps, f"{name}_ceiling", size)
        figures["ceiling_in_flight"] = in_flight
        figures["ceiling_parallel_after_items_per_s"] = count / bench.ceiling(steps, f"{name}_ceiling2", size,
                                                                              in_flight)
        if "ceiling_parallel_before_items_per_s" in figures:
            figures["ceiling_parallel_items_per_s"] = statistics.harmonic_mean(
                (figures["ceiling_parallel_before_items_per_s"], figures["ceiling_parallel_after_items_per_s"]))
        else:
            figures["ceiling_parallel_items_per_s"] = figures["ceiling_parallel_after_items_per_s"]
        figures["ceiling_items_per_s"] = max(figures["ceiling_sequential_items_per_s"],
                                             figures["ceiling_parallel_items_per_s"])
    if "directus_sync_items_per_s" in figures:
        for other, ratio in (("baseline_items_per_s", "vs_baseline"), ("ceiling_items_per_s", "vs_ceiling")):
            if other in figures:
                figures[ratio] = figures["directus_sync_items_per_s"] / figures[other]
    print(f"  N={n}{'' if shape == 'items' else ' ' + shape} {phase:<6} " + describe(figures), flush=True)
    return figures


def describe(f: dict[str, float]) -> str:
    parts = []
    if "directus_sync_items_per_s" in f:
        parts.append(f"directus-sync {f['directus_sync_items_per_s']:7.0f}/s (run {f['directus_sync_seconds']:.1f} s, "
                     f"in tasks {f['directus_sync_task_seconds']:.1f} s, dags test {f['airflow_run_seconds']:.1f} s, "
                     f"peak {f['peak_rss_mb']:.0f} MB)")
    if "baseline_items_per_s" in f:
        parts.append(f"per-item {f['baseline_items_per_s']:6.0f}/s")
    if "ceiling_items_per_s" in f:
        parallel = f"{f['ceiling_parallel_items_per_s']:6.0f}/s {f['ceiling_in_flight']:.0f} in flight"
        if "ceiling_parallel_before_items_per_s" in f:
            parallel += (f" ({f['ceiling_parallel_before_items_per_s']:.0f} before the sync, "
                         f"{f['ceiling_parallel_after_items_per_s']:.0f} after)")
        parts.append(f"ceiling {f['ceiling_sequential_items_per_s']:6.0f}/s sequential, {parallel}")
    ratios = [f"x{f['vs_baseline']:.1f} baseline" if "vs_baseline" in f else "",
              f"{f['vs_ceiling']:.2f} of ceiling" if "vs_ceiling" in f else ""]
    return " | ".join([*parts, ", ".join(r for r in ratios if r)])


def no_change_run(bench: Bench, n: int, name: str) -> dict[str, float]:
    """A run over a window without source activity, on the collection ``name`` of ``n`` items just copied."""
    bench.wait_for_quiet_window(OVERLAP_SECONDS + 60)  # a manual run's interval starts a minute back
    quiet = bench.sync_run(f"directus_sync__{name}", f"{name}_no_change")
    print(f"  N={n} no-change run: {quiet['seconds']:.1f} s, in tasks {quiet['task_seconds']:.2f} s, "
          f"{quiet['activity_rows']} activity rows read", flush=True)
    return quiet


def machine_load() -> dict[str, Any]:
    """Load averages (1, 5, 15 min) and cores: how busy the machine was, to read the timings by."""
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "at": datetime.now(UTC).isoformat(timespec="seconds")}


def _cell(f: dict[str, float], key: str, pattern: str) -> str:
    if key not in f:
        return "-"
    if key == "ceiling_parallel_items_per_s" and "ceiling_parallel_before_items_per_s" in f:
        return (f"{f[key]:.0f} ({f['ceiling_parallel_before_items_per_s']:.0f} / "
                f"{f['ceiling_parallel_after_items_per_s']:.0f})")
    return pattern.format(f[key])


def size_label(r: dict[str, Any]) -> str:
    """N, and the shape when it is not the items' one collection."""
    shape = r.get("shape", "items")
    return f"{r['n']:,}" + ("" if shape == "items" else f" {shape}")


def markdown(report: dict[str, Any]) -> str:
    """The figures as Markdown tables, with the machine's load while they were taken."""
    lines = [f"Load averages (1/5/15 min) at start {report['machine_before']['load_average']}, at end "
             f"{report['machine_after']['load_average']}, on {report['machine_before']['cpus']} cores; "
             f"directus-sync with write_concurrency={report.get('write_concurrency', WRITE_CONCURRENCY)}, the "
             f"parallel ceiling with max(2, that) requests in flight, measured just before and just after the "
             f"sync (the column gives both; their combined rate is the ceiling).", "",
             "| N | phase | directus-sync items/s | run s | in tasks s | `dags test` s | per-item items/s "
             "| ceiling items/s, 1 in flight | ceiling, parallel (before / after) | vs per-item | vs ceiling "
             "| peak MB |", "|" + "---|" * 12]
    columns = (("directus_sync_items_per_s", "{:.0f}"), ("directus_sync_seconds", "{:.1f}"),
               ("directus_sync_task_seconds", "{:.1f}"), ("airflow_run_seconds", "{:.1f}"),
               ("baseline_items_per_s", "{:.0f}"), ("ceiling_sequential_items_per_s", "{:.0f}"),
               ("ceiling_parallel_items_per_s", "{:.0f}"), ("vs_baseline", "{:.1f}x"),
               ("vs_ceiling", "{:.2f}"), ("peak_rss_mb", "{:.0f}"))
    for r in report["sizes"]:
        for phase, f in r["phases"].items():
            lines.append(f"| {size_label(r)} | {phase} | " + " | ".join(_cell(f, k, p) for k, p in columns) + " |")
    lines += ["", "| N | no-change run s | in tasks s | `dags test` s | activity rows read | peak MB |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {q['seconds']:.1f} | {q['task_seconds']:.2f} | {q['airflow_run_seconds']:.1f} | "
              f"{q['activity_rows']} | {q['peak_rss_mb']:.0f} |"
              for r in report["sizes"] if (q := r.get("no_change_run"))]
    return "\n".join(lines) + "\n"


def chart(sizes: list[dict[str, Any]], path: Path) -> None:
    """Throughput against N for the three methods, one panel per phase."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install '.[bench]')")
        return
    if not sizes:
        return
    figure, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=False)
    ns = [r["n"] for r in sizes]
    for axis, phase in zip(axes, ("create", "update", "delete"), strict=True):
        if not all(phase in r["phases"] for r in sizes):
            continue
        for key, label in (("directus_sync_items_per_s", "directus-sync"), ("baseline_items_per_s", "per-item"),
                           ("ceiling_items_per_s", "bulk ceiling (faster of 1 and 2 in flight)")):
            if all(key in r["phases"][phase] for r in sizes):
                axis.plot(ns, [r["phases"][phase][key] for r in sizes], marker="o", label=label)
        axis.set_xscale("log")
        axis.set_title(phase)
        axis.set_xlabel("N items")
        axis.set_ylabel("items/s")
        axis.set_ylim(bottom=0)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_reports(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report))
    chart([r for r in report["sizes"] if r.get("shape", "items") == "items"], out / "throughput.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the reports go")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="measure only these (profiling: --methods sync)")
    parser.add_argument("--profile", type=Path, help="record each directus-sync run with py-spy into this folder")
    parser.add_argument("--logs", type=Path, help="keep each directus-sync run's `dags test` output in this folder")
    parser.add_argument("--write-concurrency", type=int, default=WRITE_CONCURRENCY,
                        help="the sync row's write_concurrency (the parallel ceiling uses at least 2)")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=["items"],
                        help="items: one collection of a dozen fields; relational: authors, articles with a "
                             "many-to-one author and a many-to-many alias tags (junction), N/10 tags")
    parser.add_argument("--stop-after", choices=PHASES, default="delete",
                        help="the last phase to run (memory and the no-change run at a large N: create)")
    args = parser.parse_args()
    exit_on_sigterm()
    cli = ensure_directus(default_cache_dir())
    tag = os.getpid()
    databases = [(f"bench_{side}_{tag}", PostgresDatabase(f"directus_sync_bench_{tag}_{side}")) for side in "ab"]
    report: dict[str, Any] = {"machine_before": machine_load(), "write_concurrency": args.write_concurrency}
    with tempfile.TemporaryDirectory(prefix="directus-sync-bench-") as tmp, \
            running_instances(cli, databases, Path(tmp) / "directus") as (source, remote):
        airflow = LocalAirflow(Path(tmp) / "airflow")
        table = Path(tmp) / "table.db"
        airflow.connections["directus_sync_db"] = {"conn_type": "sqlite", "host": str(table)}
        airflow.migrate()
        engine = sa.create_engine(f"sqlite:///{table}")
        tables.migrate(engine)
        bench = Bench(source, remote, airflow, tuple(args.methods), args.profile, args.logs)
        bench.last_phase, bench.write_concurrency = args.stop_after, args.write_concurrency
        phases = len(args.n) * len(args.shapes) * (PHASES.index(args.stop_after) + 1)
        try:
            with PROGRESS, step(f"benchmark: phases of N={', '.join(map(str, args.n))}", phases,
                                rate=False) as advance:
                bench.phase_done = lambda: advance(1)
                report["sizes"] = [run_size(bench, n, engine, shape) for n in args.n for shape in args.shapes]
        finally:
            for _, database in databases:
                source.stop()
                remote.stop()
                database.drop()
    report["machine_after"] = machine_load()
    write_reports(report, args.out)
    print(f"results: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
