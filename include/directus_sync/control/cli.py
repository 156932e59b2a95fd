"""The ``directus-sync`` command: provision instances, manage the remote-sources table, check a remote.

Every user mistake (unknown connection, unreachable URL, bad JSON, a field missing on one side) ends in
a message that says what to fix and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
import typer
from airflow.sdk import ObjectStoragePath
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from directus_sync.airflow import steps
from directus_sync.config import BrokenRemote, CollectionSchema, RemoteSource, parse_row
from directus_sync.control.check import check_remote, instance_facts
from directus_sync.directus.provision import UNENFORCED_NOTE, USER_EMAIL, ProvisionError, provision
from directus_sync.engine import dryrun
from directus_sync.engine.cursor import ActivityCursor
from directus_sync.engine.extract import compute_window, extract
from directus_sync.state import ledger, sources, tables

app = typer.Typer(help="Set up and check directus-sync.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Create or migrate the package's tables (Alembic migrations, own version table).",
                     no_args_is_help=True)
remote_app = typer.Typer(help="Manage rows of the remote-sources table.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(remote_app, name="remote")
console = Console()
errors = Console(stderr=True)

DbConn = Annotated[str, typer.Option("--db-conn-id", envvar="DIRECTUS_SYNC_DB_CONN_ID",
                                     help="Airflow connection of the remote-sources table's database.")]
RemoteName = Annotated[str, typer.Argument(help="The remote's name (its row in the remote-sources table).",
                                           show_default=False)]


def package_version() -> str:
    """The installed distribution's version (from its metadata), else the source tree's."""
    try:
        return metadata.version("directus-sync")
    except metadata.PackageNotFoundError:
        from directus_sync import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        console.print(f"directus-sync {package_version()}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version of directus-sync and exit.")] = False,
) -> None:
    """Set up and check directus-sync."""


def fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _engine(conn_id: str) -> Any:
    try:
        return tables.engine_for(conn_id)
    except tables.ConfigStoreError as exc:
        raise fail(str(exc)) from None


def _rows(conn_id: str) -> list[dict[str, Any]]:
    try:
        return sources.read_rows(_engine(conn_id))
    except Exception as exc:
        raise fail(f"cannot read the remote-sources table through {conn_id!r}: {exc}; "
                   "run `directus-sync db init` first if it does not exist") from None


# -- provision ------------------------------------------------------------------------------------


@app.command("provision")
def provision_command(
    url: Annotated[str, typer.Option(help="The instance URL, e.g. https://cms.example.com")],
    admin_token: Annotated[str, typer.Option(envvar="DIRECTUS_ADMIN_TOKEN", prompt=True, hide_input=True,
                                             help="An admin's static token (or $DIRECTUS_ADMIN_TOKEN).")],
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", "-c", help="A collection to sync with every field (repeat); prefer --schema.")] = None,
    schema: Annotated[str | None, typer.Option(
        help='The synced collections and fields, JSON like the table\'s schema column: '
             '[{"name": "articles", "fields": ["title"]}], or @path/to/file.json')] = None,
    remote: Annotated[list[str] | None, typer.Option(
        help="Take the schema from this remote's row in the remote-sources table (repeat).")] = None,
    email: Annotated[str, typer.Option(help="The sync user's e-mail address.")] = USER_EMAIL,
    conn_id: Annotated[str, typer.Option(help="The Airflow connection id to print.")] = "directus_default",
    token: Annotated[str | None, typer.Option(envvar="DIRECTUS_SYNC_TOKEN",
                                              help="Give the sync user this token (default: a new one).")] = None,
    prune_files: Annotated[bool, typer.Option(
        "--prune-files", help="Also grant what a row's prune_files takes (deleting files; reading the avatars and "
                              "the project's images that may hold one); implied by a --remote row that sets it.")
    ] = False,
    db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID,
) -> None:
    """Create or update the "Data Sync" policy, its permissions and API user; print the grant and the connection.

    The policy may touch only the primary key and listed fields of each synced collection (every field of
    a collection given with --collection alone), read the activity of the synced collections only, and
    create notifications; on Directus's core licence, which does not enforce such limits, whole collections.
    """
    wanted, rows_prune = _provision_schema(collection or [], schema, remote or [], db_conn_id)
    try:
        with errors.status(f"provisioning the sync user on {url}"):
            user = provision(url, admin_token, wanted, token=token, email=email, prune_files=prune_files or rows_prune)
    except ProvisionError as exc:
        raise fail(str(exc)) from None
    connection = user.connection()
    console.print(f"Sync user {user.user_id} ({user.email}) on {user.url} may sync: {', '.join(sorted(wanted))}",
                  markup=False)
    table = Table("collection", "action", "fields", "filter", title='The "Data Sync" policy grants')
    for grant in user.grants:
        table.add_row(*grant.describe())
    console.print(table)
    if not user.rules_enforced:
        console.print(f"note: {UNENFORCED_NOTE}. A Directus licence with custom permission rules lets provision "
                      "limit them (run it again after activating one).", markup=False)
    console.print("Store it as an Airflow connection (it holds the sync user's token), as JSON:")
    console.print(f"  AIRFLOW_CONN_{conn_id.upper()}='{json.dumps(connection)}'", soft_wrap=True, markup=False)
    console.print("or as a URI:", markup=False)
    console.print(f"  AIRFLOW_CONN_{conn_id.upper()}='{connection_uri(user.url, user.token)}'",
                  soft_wrap=True, markup=False)


def _provision_schema(collections: list[str], schema: str | None, remotes: list[str], db_conn_id: str
                      ) -> tuple[dict[str, list[str] | None], bool]:
    """Each collection to provision with its listed fields (``None``: every field), from the options (a
    collection listed by several remotes gets the fields of all of them), and whether a remote prunes files."""
    entries: list[CollectionSchema] = []
    prune_files = False
    if schema is not None:
        loaded = _load_schema(schema)
        if not isinstance(loaded, list) or not loaded:
            raise fail('--schema must be a non-empty JSON list like [{"name": "articles", "fields": ["title"]}]')
        for index, entry in enumerate(loaded):
            try:
                entries.append(CollectionSchema.model_validate(entry))
            except ValidationError as exc:
                raise fail(f"--schema[{index}]: {exc.errors()[0]['msg']}") from None
    for name in remotes:
        parsed = parse_row(_find(name, db_conn_id))
        if isinstance(parsed, BrokenRemote):
            raise fail(f"remote {name!r}: {parsed.error}")
        entries += parsed.sync_schema
        prune_files = prune_files or parsed.prune_files
    wanted: dict[str, list[str] | None] = {}
    for entry in entries:
        wanted[entry.name] = list(dict.fromkeys([*(wanted.get(entry.name) or []), *entry.fields]))
    for name in collections:
        wanted.setdefault(name, None)
    if not wanted:
        raise fail("name the synced collections: --schema, --remote or --collection")
    return wanted, prune_files


def connection_uri(url: str, token: str) -> str:
    """The URI form of an http connection: the scheme travels as the connection's schema (the path)."""
    parts = urlsplit(url)
    if parts.path.strip("/"):
        raise fail(f"{url} has a path; use the JSON form of the connection, whose host may hold a full URL")
    return f"http://:{quote(token, safe='')}@{parts.netloc}/{parts.scheme}"


# -- db -------------------------------------------------------------------------------------------


@db_app.command("init")
def db_init(db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Create the package's tables, or upgrade them to this version (safe to repeat)."""
    _migrate(db_conn_id)


@db_app.command("upgrade")
def db_upgrade(db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Run the package's Alembic migrations up to this version's head (safe to repeat)."""
    _migrate(db_conn_id)


@db_app.command("current")
def db_current(db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Print the schema revision of the package's tables, and this version's head."""
    from directus_sync.state import migrations

    try:
        current = migrations.current(_engine(db_conn_id))
    except Exception as exc:
        raise fail(f"cannot read the schema revision in the database of {db_conn_id!r}: {exc}") from None
    head = migrations.head()
    state = "up to date" if current == head else "run `directus-sync db upgrade`"
    console.print(f"revision {current or 'none'} (head {head}): {state}")


def _migrate(conn_id: str) -> None:
    try:
        done = tables.migrate(_engine(conn_id))
    except Exception as exc:
        raise fail(f"cannot migrate the database of {conn_id!r}: {exc}") from None
    before = done.before or ("none (tables predating the migrations, stamped at the baseline)" if done.stamped
                             else "none")
    if done.changed:
        console.print(f"upgraded the package's tables in the database of {conn_id!r} "
                      f"from revision {before} to {done.after}")
    else:
        console.print(f"the package's tables in the database of {conn_id!r} are at revision {done.after}: "
                      "nothing to do")
    console.print(f"remote-sources table ready in the database of {conn_id!r}")


# -- remote ---------------------------------------------------------------------------------------


@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="Unique slug; the DAG is directus_sync__<name>.")],
    source: Annotated[str, typer.Option(help="Airflow connection id of the source instance.")],
    remote: Annotated[str, typer.Option(help="Airflow connection id of the remote instance.")],
    schema: Annotated[str, typer.Option(help='JSON like [{"name": "articles", "fields": ["title"]}], '
                                             "or @path/to/file.json")],
    notify: Annotated[list[str] | None, typer.Option(help="Directus user id on the source (repeat).")] = None,
    schedule: Annotated[str | None, typer.Option(help="Cron or preset; default */5 * * * *.")] = None,
    status: Annotated[str, typer.Option(help="published, draft or archived.")] = "published",
    replace: Annotated[bool, typer.Option(help="Overwrite a row of the same name.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other column as COLUMN=VALUE, e.g. "
                                                   "batch_size=1000 or conflict_policy=source_wins (repeat).")] = None,
    db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID,
) -> None:
    """Add a remote (validated before it is written)."""
    row: dict[str, Any] = {"name": name, "status": status, "source_conn_id": source, "remote_conn_id": remote,
                           "schema": _load_schema(schema), "notify_users": list(notify or []),
                           "schedule": schedule, **_columns(set_ or [])}
    parsed = parse_row(row)
    if isinstance(parsed, BrokenRemote):
        raise fail(parsed.error)
    for column in _columns(set_ or []):  # store the validated, typed value
        value = getattr(parsed, column)
        row[column] = value.value if isinstance(value, Enum) else value
    engine = _engine(db_conn_id)
    if not replace and any(r["name"] == name for r in _rows(db_conn_id)):
        raise fail(f"remote {name!r} exists; pass --replace to overwrite it")
    sources.upsert_row(engine, row)
    console.print(f"remote {name!r} saved; its DAG is {parsed.dag_id}")


def _columns(assignments: list[str]) -> dict[str, Any]:
    """``COLUMN=VALUE`` pairs for the table's other columns; values are checked with the rest of the row."""
    known = set(tables.remote_sources.c.keys()) - {"id", "created_at", "updated_at"}
    columns: dict[str, Any] = {}
    for assignment in assignments:
        column, sep, value = assignment.partition("=")
        if not sep or column not in known:
            raise fail(f"--set {assignment!r}: expected COLUMN=VALUE with COLUMN one of {', '.join(sorted(known))}")
        if isinstance(tables.remote_sources.c[column].type, sa.JSON):
            columns[column] = _load_json(value, f"--set {column}")
        else:
            columns[column] = {"true": True, "false": False}.get(value.lower(), value)
    return columns


def _load_schema(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise fail(f"schema file {path} does not exist")
        text = path.read_text()
    return _load_json(text, "--schema")


def _load_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


@remote_app.command("list")
def remote_list(db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """List the remotes with their status and schema."""
    table = Table("name", "status", "source", "remote", "trigger", "schedule", "collections", "problem")
    for row in _rows(db_conn_id):
        parsed = parse_row(row)
        if isinstance(parsed, RemoteSource):
            table.add_row(parsed.name, parsed.status.value, parsed.source_conn_id, parsed.remote_conn_id,
                          parsed.trigger.value, parsed.schedule, ", ".join(parsed.collections), "")
        else:
            table.add_row(str(row.get("name")), str(row.get("status")), str(row.get("source_conn_id")),
                          str(row.get("remote_conn_id")), str(row.get("trigger") or ""), str(row.get("schedule")),
                          "", parsed.error)
    console.print(table)


@remote_app.command("show")
def remote_show(name: RemoteName, db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Show one remote as JSON, with its validation result."""
    row = _find(name, db_conn_id)
    parsed = parse_row(row)
    shown = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    console.print_json(json.dumps(shown, default=str))
    if isinstance(parsed, BrokenRemote):
        raise fail(parsed.error)
    console.print(f"valid; DAG {parsed.dag_id}")


@remote_app.command("enable")
def remote_enable(name: RemoteName, db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Publish a remote: its DAG appears."""
    _set_status(name, "published", db_conn_id)


@remote_app.command("disable")
def remote_disable(name: RemoteName, db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Set a remote to draft: its DAG disappears (its run history stays in Airflow)."""
    _set_status(name, "draft", db_conn_id)


@remote_app.command("remove")
def remote_remove(name: RemoteName, db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Delete a remote's row."""
    _find(name, db_conn_id)
    sources.delete_row(_engine(db_conn_id), name)
    console.print(f"remote {name!r} removed")


@app.command("check")
def check(name: RemoteName, db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID) -> None:
    """Check both instances of a remote: connections, tokens, permissions, fields and their types."""
    parsed = parse_row(_find(name, db_conn_id))
    if isinstance(parsed, BrokenRemote):
        raise fail(parsed.error)
    with errors.status(f"checking remote {name!r}: both instances, tokens, permissions and fields"):
        found = check_remote(parsed)
        facts = instance_facts(parsed)
    for note in (p for p in found if p.note):
        console.print(f"note ({note.where}): {note.problem}; {note.fix}", markup=False)
    problems = [p for p in found if not p.note]
    for fact in facts:
        console.print(fact)
    if not problems:
        console.print(f"[green]remote {name!r} is ready:[/green] both instances answer, the tokens work, "
                      "the permissions and every listed field are in place")
        return
    table = Table("where", "problem", "what to do", title=f"{len(problems)} problems with remote {name!r}")
    for problem in problems:
        table.add_row(problem.where, problem.problem, problem.fix)
    console.print(table)
    raise typer.Exit(code=1)


@app.command("plan")
def plan_command(
    name: Annotated[str, typer.Argument(help="The remote (its row in the remote-sources table).")],
    full: Annotated[bool, typer.Option("--full", help="Compare every item, as a run with full_resync does.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="With --full: also list remote items the source does "
                                                        "not have, which a pruning run would delete.")] = False,
    db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID,
) -> None:
    """Show what the next sync of a remote would write, without writing anything.

    It extracts and plans as a run does (from the end of the last successful window in the run ledger, or
    every item with --full), in a temporary folder it deletes afterwards.
    """
    if prune and not full:
        raise fail("--prune needs --full: only a comparison of every item can tell which remote items the "
                   "source does not have")
    parsed = parse_row(_find(name, db_conn_id))
    if isinstance(parsed, BrokenRemote):
        raise fail(parsed.error)
    folder = Path(tempfile.mkdtemp(prefix="directus-sync-plan-"))
    try:
        summary = _dry_run(parsed, _engine(db_conn_id), folder, full, prune)
    except typer.Exit:
        raise
    except Exception as exc:  # a Directus answer, a schema mismatch, the ledger: each message says what to fix
        raise fail(f"cannot plan remote {name!r}: {exc}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for line in dryrun.render(summary):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _dry_run(remote: RemoteSource, engine: Any, folder: Path, full: bool, prune: bool) -> dict[str, Any]:
    """Extract and plan like the remote's next run (the same steps), staging under ``folder``; record nothing."""
    window = compute_window(interval_start=None, interval_end=datetime.now(UTC),
                            prev_success_end=ledger.last_window_end(engine, remote.name),
                            overlap=remote.overlap, full_resync=full)
    manifest = extract(steps.hook_for(remote, remote.source_conn_id), remote, window,
                       ObjectStoragePath(f"file://{folder}"), ledger.open_dead_letters(engine, remote.name),
                       list_source_keys=prune, previous=ActivityCursor.restore(ledger.last_cursor(engine, remote.name)))
    sync_plan, guard = steps.plan_changes(remote, manifest, engine)
    return dryrun.summarize(sync_plan, guard.conflicts, remote.conflict_policy)


@app.command("runs")
def runs(
    name: Annotated[str | None, typer.Argument(help="The remote; all remotes when left out.")] = None,
    limit: Annotated[int, typer.Option(help="How many of the latest runs to show.")] = 20,
    db_conn_id: DbConn = tables.DEFAULT_DB_CONN_ID,
) -> None:
    """Show the run history (one line per run and collection) and how far each remote lags behind."""
    if name is not None:
        _find(name, db_conn_id)
    engine = _engine(db_conn_id)
    try:
        rows = ledger.recent_runs(engine, name, limit)
        synced = ledger.last_synced(engine)
    except Exception as exc:
        raise fail(f"cannot read the run ledger through {db_conn_id!r}: {exc}; "
                   "run `directus-sync db upgrade` if the table is missing") from None
    table = Table("finished (UTC)", "remote", "run", "status", "collection", "read", "window end", "created",
                  "updated", "deleted", "skipped", "conflicts", "dead letters", "duration")
    for row in rows:
        table.add_row(_when(row["finished_at"]), row["remote"], row["run_id"], _status(row["status"]),
                      row["collection"], _read(row), _when(row["window_end"]),
                      *(str(row[c]) for c in ("created", "updated", "deleted", "skipped", "conflicts",
                                              "dead_letters")),
                      f"{row['duration_seconds']:.1f} s" if row["duration_seconds"] is not None else "")
    console.print(table)
    for remote in sorted({name} if name else {r["remote"] for r in rows} | set(synced)):
        behind = ledger.lag(synced.get(remote))
        console.print(f"{remote}: " + (f"lag {_duration(behind)} (synced up to {_when(synced[remote])})"
                                       if behind is not None else "never synced successfully"))


def _read(row: dict[str, Any]) -> str:
    """What the run read: its activity, or every item (and why)."""
    if not row["full_copy"]:
        return "activity"
    reason = row.get("full_reason") or ""
    return f"full comparison ({reason})" if reason else "full comparison"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _status(status: str) -> str:
    return f"[green]{status}[/green]" if status == ledger.RunStatus.SUCCESS else f"[red]{status}[/red]"


def _duration(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m {rest % 60:02d}s" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _find(name: str, conn_id: str) -> dict[str, Any]:
    for row in _rows(conn_id):
        if row["name"] == name:
            return row
    raise fail(f"no remote named {name!r}; `directus-sync remote list` shows them")


def _set_status(name: str, status: str, conn_id: str) -> None:
    row = _find(name, conn_id)
    sources.upsert_row(_engine(conn_id), {"name": row["name"], "status": status})
    console.print(f"remote {name!r} is now {status}")


def main() -> None:
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    app()


if __name__ == "__main__":
    main()
