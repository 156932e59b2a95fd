"""The demo: three local Directus instances on SQLite, synced by the generated DAGs through real Airflow.

``make demo`` (or ``python -m devtools.demo``) starts everything under ``.demo/``, runs the sync
twice with a change on the source in between, proves each result by reading the remotes back, and stops
every process it started, on success, error or Ctrl-C. With ``--ui`` it then keeps ``airflow standalone``
running on the same metadata database, the DAGs unpaused and a scheduler run of each done, and prints the
URLs of the UI, each DAG's run grid and the status page.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devtools.devserver import (
    ARTICLE_FIELDS,
    DirectusInstance,
    SqliteDatabase,
    default_cache_dir,
    ensure_directus,
    exit_on_sigterm,
    key_field,
    plain_field,
    running_instances,
)
from devtools.liveairflow import settled_runs, unpause_when_parsed
from devtools.localairflow import LocalAirflow, Standalone
from directus_sync.directus.provision import provision
from directus_sync.state import ledger, sources, tables

COLLECTION = "articles"
SYNCED_FIELDS = ["title", "body", "views"]
# Articles first: the run still writes authors and tags before the articles and links that point at them.
SCHEMA: list[dict[str, Any]] = [{"name": COLLECTION, "fields": [*SYNCED_FIELDS, "author", "tags", "cover"]},
                                 {"name": "authors", "fields": ["name"]}, {"name": "tags", "fields": ["label"]}]
# How an article reads with its relations: the author's name, the labels of its tags, its cover image's file.
RELATED_FIELDS = "id,title,views,author.name,tags.tags_id.label,cover.id,cover.filename_download,cover.filesize"
INSTANCES = ("source", "remote_b", "remote_c")
REMOTES = {"demo_to_b": "remote_b", "demo_to_c": "remote_c"}
# statuspage.URL_PREFIX; not imported, since importing the page loads Airflow's API server (slow, noisy).
STATUS_PAGE_PATH = "/directus-sync/"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--dir", default=".demo", help="where instances, Airflow and the table live")
    parser.add_argument("--ui", action="store_true",
                        help="afterwards, keep `airflow standalone` running with the sync DAGs and their runs")
    parser.add_argument("--port", type=int, default=8080, help="the Airflow UI's port with --ui")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    try:
        with demo(Path(args.dir), ui=args.ui, port=args.port) as shown:
            if shown is not None:
                print_ui(shown)
                say("Ctrl-C stops Airflow and the instances")
                shown.server.process.wait()
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    say("done; every process the demo started is stopped")
    return 0


@dataclass
class DemoUi:
    """The running ``airflow standalone`` of ``--ui``, with the demo's DAGs and runs in it."""

    server: Standalone
    dag_ids: list[str]

    @property
    def status_page(self) -> str:
        return f"{self.server.url}{STATUS_PAGE_PATH}"

    def runs_page(self, dag_id: str) -> str:
        """The DAG's page on its Runs tab: the grid beside the list of runs."""
        return f"{self.server.url}/dags/{dag_id}/runs"


@contextlib.contextmanager
def demo(workdir: Path, ui: bool = False, port: int = 8080, ui_timeout: float = 600) -> Iterator[DemoUi | None]:
    """Run the demo under ``workdir`` (emptied first); with ``ui``, yield the UI once it shows the runs.

    Every process it started (Directus instances, ``airflow standalone`` and its children) is stopped
    when the block exits, however it exits.
    """
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)  # every run starts clean
    workdir.mkdir(parents=True)
    say("installing directus@12.4.0 from npm (cached after the first time)")
    cli = ensure_directus(default_cache_dir())
    databases = [(name, SqliteDatabase(workdir / name / "data.db")) for name in INSTANCES]
    with contextlib.ExitStack() as stack:
        say("starting three Directus instances on SQLite")
        started = stack.enter_context(running_instances(cli, databases, workdir / "directus"))
        airflow = sync_twice({i.name: i for i in started}, workdir)
        if not ui:
            yield None
            return
        say("starting `airflow standalone` with the sync DAGs and the status page plugin")
        server = stack.enter_context(airflow.standalone(port=port))
        yield show_in_ui(server, ui_timeout)


def sync_twice(instances: dict[str, DirectusInstance], workdir: Path) -> LocalAirflow:
    """The demo proper: a full copy, changes on the source, then a sync of only the changes."""
    for instance in instances.values():
        print(f"    {instance.name:<9} {instance.url}")
    airflow = LocalAirflow(workdir / "airflow")
    table_path = workdir / "airflow" / "remote_sources.db"
    airflow.connections["directus_sync_db"] = {"conn_type": "sqlite", "host": str(table_path)}
    prepare(instances, airflow, table_path)
    source = instances["source"]
    ada, grace = (a["id"] for a in source.api("POST", "/items/authors", json=[{"name": "Ada"}, {"name": "Grace"}]))
    news, howto = (t["id"] for t in source.api("POST", "/items/tags", json=[{"label": "news"}, {"label": "howto"}]))
    cover = source.upload(demo_image(0), "cover-1.png", "image/png", title="Cover of article 1")
    # As the Data Studio saves an article with its author and tags: one nested write.
    seeded = source.api("POST", f"/items/{COLLECTION}", json=[
        {"title": f"Article {n}", "body": f"Body of article {n}", "views": n * 10, "author": ada if n % 2 else grace,
         "tags": {"create": [{"tags_id": news}] + ([{"tags_id": howto}] if n % 2 else []), "update": [],
                  "delete": []},
         "cover": cover if n == 1 else None, "internal_note": "never leaves the source"} for n in range(1, 6)])
    say(f"seeded {len(seeded)} articles on the source; first sync (a full copy)")
    sync_all(airflow, instances)

    say("changing the source: one update, one delete, one create by a new author with a new tag and cover image")
    source.api("PATCH", f"/items/{COLLECTION}/1", json={"title": "Article 1 (edited)", "views": 11})
    source.api("DELETE", f"/items/{COLLECTION}/2")
    [linus] = (a["id"] for a in source.api("POST", "/items/authors", json=[{"name": "Linus"}]))
    source.api("POST", f"/items/{COLLECTION}", json={
        "title": "Article 6", "body": "New", "views": 60, "author": linus,
        "cover": source.upload(demo_image(6), "cover-6.png", "image/png", title="Cover of article 6"),
        "tags": {"create": [{"tags_id": {"label": "release"}}], "update": [], "delete": []}})
    say("second sync (only the changes)")
    sync_all(airflow, instances)
    show_history(table_path)
    return airflow


def demo_image(seed: int) -> bytes:
    """A small PNG (a 64x64 gradient), different for each ``seed``."""
    rows = b"".join(b"\x00" + bytes((x * 4 + seed * 30) % 256 for x in range(64)) * 3 for _ in range(64))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)  # 64x64, 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def prepare(instances: dict[str, DirectusInstance], airflow: LocalAirflow, table_path: Path) -> None:
    say("creating articles (with an author, tags and a cover image), authors and tags on each instance; "
        "provisioning a sync user")
    for instance in instances.values():
        instance.create_collection("authors", [key_field(), plain_field("name")])
        instance.create_collection("tags", [key_field(), plain_field("label")])
        instance.create_collection(COLLECTION, ARTICLE_FIELDS)
        instance.create_many_to_one(COLLECTION, "author", "authors")
        instance.create_many_to_many(COLLECTION, "tags", "tags", "articles_tags")
        instance.create_file_field(COLLECTION, "cover")
        user = provision(instance.url, instance.admin_token, {c["name"]: c["fields"] for c in SCHEMA})
        airflow.connections[f"directus_{instance.name}"] = user.connection()
    say("preparing Airflow (SQLite metadata) and the remote-sources table")
    airflow.migrate()
    engine = sa.create_engine(f"sqlite:///{table_path}")
    tables.migrate(engine)
    for name, remote in REMOTES.items():
        sources.upsert_row(engine, {
            "name": name, "status": "published", "source_conn_id": "directus_source",
            "remote_conn_id": f"directus_{remote}", "schedule": "*/5 * * * *",
            "schema": SCHEMA, "notify_users": []})
        listed = "; ".join(f"{c['name']}: {', '.join(c['fields'])}" for c in SCHEMA)
        print(f"    remote {name}: directus_source -> directus_{remote}, {listed}")


def sync_all(airflow: LocalAirflow, instances: dict[str, DirectusInstance]) -> None:
    for name, remote in REMOTES.items():
        dag_id = f"directus_sync__{name}"
        before = read(instances[remote])
        started = time.monotonic()
        run_dag(airflow, dag_id)
        after = read(instances[remote])
        created = len(after.keys() - before.keys())
        deleted = len(before.keys() - after.keys())
        updated = sum(1 for k in after.keys() & before.keys() if after[k] != before[k])
        print(f"    {dag_id}: {created} created, {updated} updated, {deleted} deleted on {remote} "
              f"({time.monotonic() - started:.1f} s)")
        prove(instances["source"], instances[remote])


def read(instance: DirectusInstance, fields: str = "*") -> dict[int, dict[str, Any]]:
    rows = instance.api("GET", f"/items/{COLLECTION}", params={"limit": -1, "sort": "id", "fields": fields})
    return {row["id"]: row for row in rows}


def prove(source: DirectusInstance, remote: DirectusInstance) -> None:
    """Read both sides back and show that the synced fields and relations match and nothing else arrived."""
    on_source, on_remote = read(source), read(remote)
    same = all(on_remote.get(k, {}).get(f) == item[f] for k, item in on_source.items() for f in SYNCED_FIELDS)
    related = read(source, RELATED_FIELDS) == read(remote, RELATED_FIELDS)  # authors, tags and covers by value
    covers = [item["cover"] for item in on_source.values() if item.get("cover")]
    same_bytes = all(source.asset_digest(c) == remote.asset_digest(c) for c in covers)
    leaked = [k for k, item in on_remote.items() if item.get("internal_note")]
    verdict = ("in sync" if same and related and same_bytes and set(on_source) == set(on_remote) and not leaked
               else "NOT in sync")
    plural = "" if len(covers) == 1 else "s"
    files = f"{len(covers)} file{plural}, byte for byte: {'same' if same_bytes else 'DIFFERENT'}"
    print(f"      read back from {remote.name}: {len(on_remote)} articles with their authors, tags and cover images "
          f"({files}), {verdict}; internal_note carried: {'yes' if leaked else 'no'}")
    for key, item in sorted(read(remote, RELATED_FIELDS).items()):
        tags = ", ".join(sorted(link["tags_id"]["label"] for link in item["tags"] if link["tags_id"]))
        image = item["cover"]
        cover = f" cover {image['filename_download']} ({image['filesize']} bytes)" if image else ""
        print(f"        #{key} {item['title']!r} views={item['views']} by {(item['author'] or {}).get('name')} "
              f"[{tags}]{cover}")
    if verdict != "in sync":
        raise SystemExit(f"{remote.name} does not match the source")


def run_dag(airflow: LocalAirflow, dag_id: str) -> None:
    """One run through `airflow dags test`; its log goes to a file beside the home."""
    result = airflow.dags_test(dag_id)
    log_path = airflow.home / f"{dag_id}.log"
    with log_path.open("a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{dag_id} failed; its log is {log_path}")


def show_history(table_path: Path) -> None:
    """The run ledger, as `directus-sync runs` shows it."""
    say("run history (the ledger `directus-sync runs` reads)")
    engine = sa.create_engine(f"sqlite:///{table_path}")
    for row in reversed(ledger.recent_runs(engine)):
        print(f"    {row['remote']:<10} {row['status']:<8} {row['collection']}: {row['created']} created, "
              f"{row['updated']} updated, {row['deleted']} deleted, {row['skipped']} skipped "
              f"(window to {row['window_end']:%H:%M:%S})")
    engine.dispose()


def show_in_ui(server: Standalone, timeout: float) -> DemoUi:
    """Unpause the sync DAGs once parsed, and wait for one run of each through the scheduler to succeed.

    The demo's own runs (``airflow dags test``) share this metadata database, but a run made by the
    scheduler shows what production does, and unpausing queues the latest scheduled interval anyway:
    waiting for every run to settle leaves the grid green rather than mid-run.
    """
    shown = DemoUi(server, [f"directus_sync__{name}" for name in REMOTES])
    for dag_id in shown.dag_ids:
        unpause_when_parsed(server, dag_id, timeout)
        server.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
    say("waiting for a run of each DAG through the scheduler")
    for dag_id in shown.dag_ids:
        runs = settled_runs(server, dag_id, quiet=3, timeout=timeout)
        states = [f"{run['run_type']} {run['state']}" for run in runs]
        print(f"    {dag_id}: {', '.join(states)}", flush=True)
        if any(run["state"] != "success" for run in runs):
            raise SystemExit(f"a run of {dag_id} did not succeed; the log is {server.log_path}")
    return shown


def print_ui(shown: DemoUi) -> None:
    user, password = shown.server.login()
    say("the Airflow UI")
    print(f"    Airflow UI:   {shown.server.url}/  (login: {user} / {password})", flush=True)
    for dag_id in shown.dag_ids:
        print(f"    runs, grid:   {shown.runs_page(dag_id)}", flush=True)
    print(f"    status page:  {shown.status_page}  (also 'Directus Sync' in the UI's menu)", flush=True)
    print(f"    its log:      {shown.server.log_path}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
