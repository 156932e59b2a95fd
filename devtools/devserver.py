"""Local Directus instances for the demo, the benchmarks and the end-to-end tests.

Runs the pinned ``directus`` npm package with the machine's ``node``: ``bootstrap`` then ``start``, one
process and one database per instance (a PostgreSQL database on a local server, or an SQLite file).
Nothing here is used by the DAGs themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from directus_sync.directus.client import DirectusClient
from directus_sync.directus.errors import DirectusError

DIRECTUS_VERSION = "12.4.0"
log = logging.getLogger(__name__)


class DevServerError(RuntimeError):
    """A local Directus instance could not be installed, started or provisioned."""


def ensure_directus(cache_dir: Path) -> Path:
    """Install the pinned Directus from npm into ``cache_dir`` once; return the path of its ``cli.js``.

    A lock file makes concurrent callers (parallel test workers) wait for one install.
    """
    cache_dir = cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cli = cache_dir / "node_modules" / "directus" / "cli.js"
    marker = cache_dir / f".installed-{DIRECTUS_VERSION}"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and cli.exists():
            return cli
        if shutil.which("npm") is None or shutil.which("node") is None:
            raise DevServerError("Node.js and npm are needed to run Directus locally; install them first.")
        package_json = cache_dir / "package.json"
        if not package_json.exists():
            package_json.write_text('{"name": "directus-runtime", "private": true}\n')
        log.info("Installing directus@%s from npm into %s (once; takes a few minutes)",
                 DIRECTUS_VERSION, cache_dir)
        command = ["npm", "install", "--save-exact", "--no-audit", "--no-fund", "--loglevel=error",
                   f"directus@{DIRECTUS_VERSION}"]
        with tempfile.TemporaryFile("w+") as errors:
            process = subprocess.Popen(command, cwd=cache_dir, stdout=subprocess.DEVNULL, stderr=errors, text=True)
            try:
                returncode = wait_showing_progress(process, f"installing directus@{DIRECTUS_VERSION} from npm")
            finally:
                if process.poll() is None:  # interrupted: do not leave npm running
                    process.kill()
                    process.wait()
            errors.seek(0)
            stderr = errors.read()
        if returncode != 0 or not cli.exists():
            raise DevServerError(f"npm install directus@{DIRECTUS_VERSION} failed:\n{stderr[-4000:]}")
        marker.touch()
    return cli


def wait_showing_progress(process: subprocess.Popen[str], what: str, every: float = 30) -> int:
    """Wait for ``process``, showing the time spent: a spinner on a terminal, else a line every ``every`` s."""
    from rich.console import Console

    console = Console(stderr=True)
    started = time.monotonic()
    if console.is_terminal:
        with console.status(what) as status:
            while process.poll() is None:
                status.update(f"{what} ({elapsed_text(time.monotonic() - started)})")
                time.sleep(0.5)
    else:
        while True:
            try:
                process.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                log.info("  still %s (%s)", what, elapsed_text(time.monotonic() - started))
    log.info("  done %s in %s", what, elapsed_text(time.monotonic() - started))
    return process.returncode


def elapsed_text(seconds: float) -> str:
    """``75.4`` as ``1m 15s``; below a minute, ``42s``."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the instances a script started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresDatabase:
    """A database on a local PostgreSQL server, recreated empty for one instance."""

    name: str
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""

    def recreate(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    def _admin(self, *statements: str) -> None:
        import psycopg2  # only the harness needs it

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        return {"DB_CLIENT": "pg", "DB_HOST": self.host, "DB_PORT": str(self.port), "DB_DATABASE": self.name,
                "DB_USER": self.user, "DB_PASSWORD": self.password}


@dataclass
class SqliteDatabase:
    """An SQLite file, removed before the instance bootstraps."""

    path: Path

    def recreate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {"DB_CLIENT": "sqlite3", "DB_FILENAME": str(self.path)}


def key_field(kind: str = "integer", name: str = "id") -> dict[str, Any]:
    """A collection's primary key: an auto-increment integer, a UUID Directus fills in, or a string the editor
    types (``languages.code`` as the Data Studio makes it)."""
    if kind == "uuid":
        return {"field": name, "type": "uuid", "meta": {"special": ["uuid"], "hidden": True},
                "schema": {"is_primary_key": True}}
    if kind == "string":
        return {"field": name, "type": "string", "meta": {"interface": "input"},
                "schema": {"is_primary_key": True, "has_auto_increment": False, "length": 255}}
    return {"field": name, "type": "integer", "meta": {"hidden": True},
            "schema": {"is_primary_key": True, "has_auto_increment": True}}


def plain_field(name: str, kind: str = "string", **schema: Any) -> dict[str, Any]:
    """A field of type ``kind`` (``string``, ``text``, ``integer``...), with ``schema`` options."""
    return {"field": name, "type": kind, "meta": {}, "schema": schema}


def hidden_field(name: str, kind: str = "string") -> dict[str, Any]:
    """A field the Data Studio hides in its forms, as it makes a junction's key fields."""
    return {"field": name, "type": kind, "meta": {"hidden": True}, "schema": {}}


# The articles of the demo and the tests: integer key, title, body, views, and a field never synced.
ARTICLE_FIELDS = (key_field(), plain_field("title"), plain_field("body", "text"), plain_field("views", "integer"),
                  plain_field("internal_note"))


@dataclass
class DirectusInstance:
    """A running local Directus: its URL, its admin's static token and its process."""

    name: str
    url: str
    admin_token: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    launch: tuple[list[str], dict[str, str], Path] | None = field(default=None, repr=False)
    _clients: dict[str, DirectusClient] = field(default_factory=dict, repr=False)

    def api(self, method: str, path: str, token: str | None = None, *, json: Any = None,
            params: dict[str, Any] | None = None) -> Any:
        """Call the instance's REST API as the admin (or with ``token``) and return the ``data`` member, through
        the package's own client (:class:`~directus_sync.directus.client.DirectusClient`)."""
        client = self._clients.get(token or self.admin_token)
        if client is None:
            # One retry of reads: a kept-alive connection the instance closed (after a restart) is no failure.
            client = DirectusClient.connect(self.url, token or self.admin_token, retries=1, name=self.name)
            self._clients[token or self.admin_token] = client
        try:
            return client.request(method, path, params=params, payload=json)
        except DirectusError as exc:
            codes = f" [{', '.join(exc.codes)}]" if exc.codes else ""
            raise DevServerError(f"{self.name}: {exc.detail}{codes}") from exc

    def create_collection(self, name: str, fields: Sequence[dict[str, Any]]) -> None:
        """Create the collection ``name`` with ``fields`` (see :func:`key_field`, :func:`plain_field`)."""
        self.api("POST", "/collections", json={"collection": name, "meta": {}, "schema": {}, "fields": list(fields)})

    def create_many_to_one(self, collection: str, field: str, related: str, key_type: str = "integer") -> None:
        """Add the many-to-one ``collection.field`` -> ``related`` as the Data Studio does: the field, then
        the relation (a foreign key that sets the field to null when the related item is deleted)."""
        self.api("POST", f"/fields/{collection}", json={
            "field": field, "type": key_type, "schema": {},
            "meta": {"interface": "select-dropdown-m2o", "special": ["m2o"]}})
        self.api("POST", "/relations", json={"collection": collection, "field": field, "related_collection": related,
                                             "schema": {"on_delete": "SET NULL"}})

    def create_file_field(self, collection: str, field: str) -> None:
        """Add the image field ``collection.field`` as the Data Studio does: a uuid field with special ``file``
        and its relation to ``directus_files`` (a foreign key that sets it to null when the file is deleted)."""
        self.api("POST", f"/fields/{collection}", json={
            "field": field, "type": "uuid", "schema": {},
            "meta": {"special": ["file"], "interface": "file-image", "display": "image"}})
        self.api("POST", "/relations", json={"collection": collection, "field": field, "related_collection":
                                             "directus_files", "schema": {"on_delete": "SET NULL"}})

    def upload(self, content: bytes, filename: str, content_type: str, **fields: str) -> str:
        """Upload a file as the admin, as the Data Studio does (``POST /files``, multipart); return its id."""
        response = requests.post(f"{self.url}/files", data=fields, files={"file": (filename, content, content_type)},
                                 headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=120)
        if response.status_code >= 300:
            raise DevServerError(f"{self.name}: uploading {filename} failed ({response.status_code}): "
                                 f"{response.text[:500]}")
        return str(response.json()["data"]["id"])

    def asset_digest(self, file_id: str) -> str:
        """The SHA-256 of a file's binary as ``/assets`` serves it, read in chunks."""
        digest = hashlib.sha256()
        with requests.get(f"{self.url}/assets/{file_id}", stream=True, timeout=300,
                          headers={"Authorization": f"Bearer {self.admin_token}"}) as response:
            if response.status_code != 200:
                raise DevServerError(f"{self.name}: /assets/{file_id} answered {response.status_code}")
            for chunk in response.iter_content(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def create_many_to_many(self, collection: str, alias: str, related: str, junction: str,
                            key_type: str = "integer", keys: tuple[str, str] | None = None) -> tuple[str, str]:
        """Add the many-to-many alias ``collection.alias`` -> ``related`` through the ``junction`` collection, as
        the Data Studio does (junction rows go with either side's item); returns the junction's two key fields,
        ``keys`` or, as the Data Studio names them, ``{collection}_id`` and ``{related}_id``. ``key_type``: the
        keys of all three collections."""
        mine, theirs = keys or (f"{collection}_id", f"{related}_id")
        self.create_collection(junction, [key_field(key_type), plain_field(mine, key_type),
                                          plain_field(theirs, key_type)])
        self.api("POST", f"/fields/{collection}", json={
            "field": alias, "type": "alias", "meta": {"interface": "list-m2m", "special": ["m2m"]}})
        for key_field_name, target, one_field, other in ((mine, collection, alias, theirs),
                                                          (theirs, related, None, mine)):
            self.api("POST", "/relations", json={
                "collection": junction, "field": key_field_name, "related_collection": target,
                "meta": {"one_field": one_field, "junction_field": other}, "schema": {"on_delete": "CASCADE"}})
        return mine, theirs

    def create_translations(self, collection: str, junction: str, languages: str,
                            fields: Sequence[dict[str, Any]], alias: str = "translations",
                            key_type: str = "integer") -> tuple[str, str]:
        """Add the translations alias ``collection.alias`` as the Data Studio does: the ``languages`` collection
        (string key ``code``, a ``name``) unless it exists, the ``junction`` holding one row per translation
        (``<collection>_id``, ``<languages>_code`` and the translated ``fields``), the alias (special
        ``translations``) and the two relations, each naming the other as its junction field and nulling the
        key when its item is deleted (the recorded ``relations_directus_12.4.0.json``); returns the junction's
        two key fields. ``key_type``: the keys of ``collection`` and the junction."""
        if not any(c["collection"] == languages for c in self.api("GET", "/collections")):
            self.create_collection(languages, [key_field("string", "code"), plain_field("name")])
        mine, theirs = f"{collection}_id", f"{languages}_code"
        self.create_collection(junction, [key_field(key_type), hidden_field(mine, key_type), hidden_field(theirs),
                                          *fields])
        self.api("POST", f"/fields/{collection}", json={
            "field": alias, "type": "alias", "meta": {"interface": "translations", "special": ["translations"]}})
        for key_field_name, target, one_field, other in ((theirs, languages, None, mine),
                                                          (mine, collection, alias, theirs)):
            self.api("POST", "/relations", json={
                "collection": junction, "field": key_field_name, "related_collection": target,
                "meta": {"one_field": one_field, "junction_field": other, "sort_field": None},
                "schema": {"on_delete": "SET NULL"}})
        return mine, theirs

    def create_many_to_any(self, collection: str, alias: str, allowed: Sequence[str], junction: str,
                           key_type: str = "integer") -> str:
        """Add the many-to-any alias ``collection.alias`` as the Data Studio does: the ``junction`` with
        ``<collection>_id``, ``item`` (the related item's key, as a string: no foreign key) and ``collection``
        (its collection's name), the alias (special ``m2a``), the relation of ``item`` (no related collection,
        ``one_allowed_collections`` ``allowed``, no schema) and the one of ``<collection>_id`` (nulled when its
        item is deleted); returns ``<collection>_id``. ``key_type``: the keys of ``collection`` and the junction."""
        mine = f"{collection}_id"
        self.create_collection(junction, [key_field(key_type), hidden_field(mine, key_type), hidden_field("item"),
                                          hidden_field("collection")])
        self.api("POST", f"/fields/{collection}", json={
            "field": alias, "type": "alias", "meta": {"interface": "list-m2a", "special": ["m2a"]}})
        self.api("POST", "/relations", json={
            "collection": junction, "field": "item", "related_collection": None,
            "meta": {"one_allowed_collections": list(allowed), "one_collection_field": "collection",
                     "junction_field": mine}, "schema": None})
        self.api("POST", "/relations", json={
            "collection": junction, "field": mine, "related_collection": collection,
            "meta": {"one_field": alias, "junction_field": "item", "sort_field": None},
            "schema": {"on_delete": "SET NULL"}})
        return mine

    def start(self, timeout: float = 120) -> None:
        """Start the ``directus start`` process (again), on the same port and database."""
        assert self.launch is not None and self.log_path is not None, "only instances from start_instance"
        command, env, cwd = self.launch
        with open(self.log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until_ready(self, timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_instance(
    cli: Path,
    name: str,
    database: PostgresDatabase | SqliteDatabase,
    workdir: Path,
    port: int | None = None,
    admin_token: str | None = None,
    timeout: float = 120,
    settings: dict[str, str] | None = None,
) -> DirectusInstance:
    """Bootstrap a fresh database for ``name`` and start Directus on it; return once it answers ping.

    ``settings`` are Directus environment variables on top of these defaults, such as a production's
    ``QUERY_LIMIT_MAX``.
    """
    port = port or free_port()
    admin_token = admin_token or f"admin-token-{name}"
    instance_dir = workdir / name
    instance_dir.mkdir(parents=True, exist_ok=True)
    (instance_dir / "uploads").mkdir(exist_ok=True)
    (instance_dir / "extensions").mkdir(exist_ok=True)
    database.recreate()
    env = {
        **os.environ,
        **database.env(),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SECRET": f"secret-{name}-{port}",
        "ADMIN_EMAIL": "admin@example.com",
        "ADMIN_PASSWORD": "admin-password",
        "ADMIN_TOKEN": admin_token,
        "TELEMETRY": "false",
        "LOG_LEVEL": "warn",
        "STORAGE_LOCAL_ROOT": str(instance_dir / "uploads"),
        "EXTENSIONS_PATH": str(instance_dir / "extensions"),
        "CACHE_ENABLED": "false",
        "RATE_LIMITER_ENABLED": "false",
        "PRESSURE_LIMITER_ENABLED": "false",
        **(settings or {}),
    }
    log_path = instance_dir / "directus.log"
    with open(log_path, "wb") as log_file:
        bootstrap = subprocess.run(["node", str(cli), "bootstrap"], env=env, cwd=instance_dir,
                                   stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout)
    if bootstrap.returncode != 0:
        raise DevServerError(f"Directus bootstrap for {name} failed; see {log_path}")
    instance = DirectusInstance(name, f"http://127.0.0.1:{port}", admin_token, log_path=log_path,
                                launch=(["node", str(cli), "start"], env, instance_dir))
    instance.start(timeout)
    return instance


def wait_until_ready(instance: DirectusInstance, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.process is not None and instance.process.poll() is not None:
            raise DevServerError(f"Directus {instance.name} exited; see {instance.log_path}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{instance.url}/server/ping", timeout=2).text == "pong":
                return
        time.sleep(0.3)
    instance.stop()
    raise DevServerError(f"Directus {instance.name} did not answer within {timeout:.0f} s; see {instance.log_path}")


@contextlib.contextmanager
def running_instances(
    cli: Path, databases: Sequence[tuple[str, PostgresDatabase | SqliteDatabase]], workdir: Path,
    settings: dict[str, str] | None = None, settings_of: dict[str, dict[str, str]] | None = None,
) -> Iterator[list[DirectusInstance]]:
    """Start several instances in parallel (each with ``settings``, and those ``settings_of`` its name on top)
    and stop them all on exit."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(databases) or 1) as pool:
        futures = [pool.submit(start_instance, cli, name, db, workdir,
                               settings={**(settings or {}), **(settings_of or {}).get(name, {})})
                   for name, db in databases]
    instances: list[DirectusInstance] = []
    errors: list[BaseException] = []
    for future in futures:
        try:
            instances.append(future.result())
        except BaseException as exc:  # start the rest, then report
            errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield instances
    finally:
        for instance in instances:
            instance.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.devserver install [DIR]``: install the pinned Directus ahead of time."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m devtools.devserver")
    parser.add_argument("command", choices=["install"])
    parser.add_argument("cache_dir", nargs="?", default=str(default_cache_dir()))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_directus(Path(args.cache_dir)))
    return 0


def default_cache_dir() -> Path:
    """``DIRECTUS_SYNC_CACHE`` or ``.cache/directus`` under the current directory."""
    return Path(os.environ.get("DIRECTUS_SYNC_CACHE", ".cache/directus"))


if __name__ == "__main__":
    raise SystemExit(main())
