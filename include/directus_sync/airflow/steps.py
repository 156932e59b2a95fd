"""The bodies of the sync DAG's tasks: each reads the Airflow context, calls the library, returns a typed result.

They are plain functions of a :class:`RemoteSource`, the upstream steps' results and the task context,
so the factory can wrap them with ``@task`` and the tests can read them. Each step returns its result
(see engine/results.py), which the factory hands on through XCom: only counts, staged-file paths, windows,
keys and safe error texts. How a step fails is in :mod:`.failures`; ``record_run`` and ``notify_on_failure``
(:mod:`.outcome`) read the run's outcome from those results.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowSkipException
from sqlalchemy.engine import Engine

from directus_sync.airflow import watermark
from directus_sync.airflow.failures import PoisonItemsError, RowChanged
from directus_sync.config import BrokenRemote, ConflictPolicy, RemoteSource
from directus_sync.directus.hook import DirectusHook
from directus_sync.directus.relations import effective_schema
from directus_sync.directus.schema import check_schema
from directus_sync.engine import dryrun, files, origins
from directus_sync.engine.apply import Action, Applier, Failure
from directus_sync.engine.cursor import ActivityCursor
from directus_sync.engine.extract import ChangeManifest, Window, compute_window, extract
from directus_sync.engine.plan import CollectionPlan, ConflictGuard, Instance, SyncPlan, plan
from directus_sync.engine.results import Applied, Extracted, Planned, WindowRecord
from directus_sync.engine.staging import read_staged, remove_folder, run_folder
from directus_sync.state import leases, ledger, tables

log = logging.getLogger(__name__)


def is_dry_run(context: Mapping[str, Any]) -> bool:
    """Whether the run was triggered with ``dry_run``: extract and plan, log the plan, write nothing."""
    return bool((context.get("params") or {}).get("dry_run"))


def skip_in_dry_run(context: Mapping[str, Any]) -> None:
    """Skip a writing task of a dry run (and, through the trigger rules, the cleanup after it)."""
    if is_dry_run(context):
        raise AirflowSkipException("dry run: nothing is written")


def lease_held(remote: RemoteSource, context: Mapping[str, Any], first: bool
               ) -> contextlib.AbstractContextManager[None]:
    """The lease on the remote while a writing task runs: the run's ``first`` task waits for it, later
    tasks renew it and fail when another run has taken it (see leases.py); ``record_run`` releases it.

    A dry run writes nothing, so it takes no lease: it neither waits for nor blocks the runs that write.
    """
    if is_dry_run(context):
        return contextlib.nullcontext()
    return leases.hold(tables.engine_for(), remote.remote_conn_id, run_holder(context), wait=first)


def run_holder(context: Mapping[str, Any]) -> leases.Holder:
    return leases.Holder(context["dag"].dag_id, context["run_id"])


def extract_changes(remote: RemoteSource, context: Mapping[str, Any]) -> Extracted:
    engine = tables.engine_for()
    # The ledger knows where the remote's last successful window ended, whatever kind of run it was.
    synced_until = ledger.last_window_end(engine, remote.name)
    event_window = watermark.uses_event_window(remote, context)
    if event_window:
        window = watermark.event_window(remote, context, watermark.load_watermark(remote) or synced_until,
                                     full_resync=bool(context["params"].get("full_resync")))
    else:
        window = run_window(remote, context, synced_until)
    log.info("Remote %s: reading %s from %s", remote.name, window.describe(), remote.source_conn_id)
    folder = run_folder(context["dag"].dag_id, context["run_id"])
    retry_keys = ledger.open_dead_letters(engine, remote.name)
    # A backfill reads its own interval only; every other run also reads on from the last cursor.
    backfill = run_type(context) == "backfill"
    source = hook_for(remote, remote.source_conn_id)
    manifest = extract(source, synced_schema(remote, source), window, folder, retry_keys,
                       list_source_keys=bool(context["params"].get("prune")),
                       previous=None if backfill else ActivityCursor.restore(ledger.last_cursor(engine, remote.name)),
                       keep_cursor=not backfill)
    # The window goes with the manifest, for the run ledger and an event-mode run's watermark.
    return Extracted(manifest=manifest, window=WindowRecord(
        start=window.start if window.start and not manifest.full else None, end=window.end,
        full=manifest.full, full_reason=manifest.full_reason,
        cursor=manifest.cursor.model_dump(mode="json") if manifest.cursor else None, event_window=event_window),
        row=remote.fingerprint)


def synced_schema(remote: RemoteSource, source: DirectusHook) -> RemoteSource:
    """``remote`` with the schema the run syncs: listed aliases replaced by the collections behind them
    (see directus/relations.py). Planning takes the same schema from the extraction's manifest."""
    schemas = effective_schema(source, remote.sync_schema)
    return remote if schemas == remote.sync_schema else remote.model_copy(update={"sync_schema": schemas})


def require_same_row(remote: RemoteSource, row: str) -> None:
    """Stop a step whose row differs from the one the run's extraction was built from.

    Workers build each task from the row as it is when the task starts, so a row edited mid-run (a field
    removed, another remote) would mix two configurations in one run. The run fails instead, before this
    step writes anything; it is not recorded as a success, so the next run reads its window again.
    """
    if row and row != remote.fingerprint:
        raise RowChanged(f"the row of remote {remote.name!r} changed while this run was under way; the run stops "
                         f"before this step writes anything, and the next run uses the row as it is now and reads "
                         f"this run's window again")


def filter_schema(remote: RemoteSource, extracted: Extracted, context: Mapping[str, Any]) -> Planned:
    """Plan the run's writes; in a dry run, return (and log) the plan's summary instead, recording nothing."""
    engine = tables.engine_for()
    sync_plan, guard = plan_changes(remote, extracted.manifest, engine)
    if is_dry_run(context):
        return Planned(dry_run=_dry_run_summary(remote, sync_plan, guard, context), row=extracted.row)
    ledger.record_conflicts(engine, remote.name, context["run_id"], remote.conflict_policy.value, guard.conflicts)
    for c in sync_plan.collections:
        ledger.clear_dead_letters(engine, remote.name, c.collection, c.resolved_dead_letters)
    return Planned(plan=sync_plan, row=extracted.row)


def plan_changes(remote: RemoteSource, changes: ChangeManifest, engine: Engine) -> tuple[SyncPlan, ConflictGuard]:
    """Check the schema on both instances and stage the writes ``changes`` need on the remote.

    Planning writes nothing but staged files: the caller records conflicts and clears dead letters (or,
    in a dry run, does not), and the apply step records the origins of what it writes.
    """
    source, target = hook_for(remote, remote.source_conn_id), hook_for(remote, remote.remote_conn_id)
    shapes = check_schema(changes.schemas(), source, target, full=changes.full,
                          reconcile=bool(remote.reconcile_schedule))
    guard = conflict_guard(remote, source, target, engine)
    return plan(target, changes, shapes, remote.batch_size, guard, prune_remote=changes.prune,
                release_files=remote.prune_files), guard


def _dry_run_summary(remote: RemoteSource, sync_plan: SyncPlan, guard: ConflictGuard,
                     context: Mapping[str, Any]) -> dict[str, Any]:
    """Log the plan's summary and drop the staged files: the writing tasks (and the cleanup) are skipped."""
    summary = dryrun.summarize(sync_plan, guard.conflicts, remote.conflict_policy)
    for line in dryrun.render(summary):
        log.info("%s", line)
    cleanup_staging(context)
    return summary


def conflict_guard(remote: RemoteSource, source: DirectusHook, target: DirectusHook, engine: Engine) -> ConflictGuard:
    """The conflict check of ``remote``'s runs: instances are named by their connection ids."""
    return ConflictGuard(Instance(source, remote.source_conn_id, source.current_user_id()),
                         Instance(target, remote.remote_conn_id, target.current_user_id()),
                         engine, policy=remote.conflict_policy)


def apply_writes(remote: RemoteSource, planned: Planned, action: Action, context: Mapping[str, Any]) -> Applied:
    """Run one of ``apply_creates``, ``apply_updates`` or ``apply_deletes`` over every collection.

    Items the remote refuses go to the dead-letter table and fail the task once every other item is
    written (the failure carries the counts written); dead letters written successfully now leave the table.
    """
    if planned.plan is None:
        raise ValueError("a dry run's plan has nothing to apply")
    target = hook_for(remote, remote.remote_conn_id)
    # Deletes include the prunes of a reconcile, checked against the source right before deleting; creates and
    # updates copy the files their items name first (each task its own: they may run on other workers).
    copies_files = action != "delete" and any(c.file_fields for c in planned.plan.collections)
    source = hook_for(remote, remote.source_conn_id) if action == "delete" or copies_files else None
    engine = tables.engine_for()
    files_from = FileSource(remote, source, target.current_user_id()) if copies_files and source else None
    uncopied = copy_referenced_files(files_from, planned.plan, target, action).failed if files_from else {}
    open_letters = ledger.open_dead_letters(engine, remote.name)
    written: dict[str, int] = {}
    failures: list[Failure] = []
    # The plan lists collections in write order (related ones first, see engine/order.py): deletes go in reverse.
    in_order = planned.plan.collections
    for c in reversed(in_order) if action == "delete" else in_order:
        outcome = Applier(target, c, open_letters.get(c.collection), source, origin_recorder(engine, remote, c),
                          uncopied).run(action, remote.batch_size, concurrency=remote.write_concurrency)
        ledger.clear_dead_letters(engine, remote.name, c.collection, outcome.written_keys)
        written[c.collection] = outcome.written
        failures += outcome.failures
    if action == "update":  # the run's last writes: references are now as they will stay
        if files_from:
            refresh_changed_files(files_from, planned.plan, target)
        if remote.prune_files:
            prune_released_files(remote, planned.plan, target)
    applied = Applied(action=action, written=written)
    if failures:
        ledger.record_dead_letters(engine, remote.name, context["run_id"], failures)
        shown = "; ".join(f"{f.collection} {f.key}: {f.error}" for f in failures[:5])
        # The ledger counts what was written even when the task fails for refused items.
        raise PoisonItemsError(f"the remote refused {len(failures)} items (now in the dead-letter table), "
                               f"all others were written: {shown}", delivered=[applied])
    return applied


@dataclass(frozen=True)
class FileSource:
    """Where an apply task copies files from, and how the remote's copies are weighed (see files.decide)."""

    remote: RemoteSource
    source: DirectusHook
    remote_sync_user: str  # the sync user's id on the remote: its own edits of a copy are not the remote's

    @property
    def source_wins(self) -> bool:
        return self.remote.conflict_policy == ConflictPolicy.SOURCE_WINS


def copy_referenced_files(files_from: FileSource, sync_plan: SyncPlan, target: DirectusHook, action: Action
                          ) -> files.FileCopy:
    """Copy the files the run's staged creates (or updates) reference, before any item naming them is written
    (see engine/files.py). A file that fails is logged; the items naming it then fail alone, as dead letters."""
    staged = [(c.references, _staged_writes(c, action)) for c in sync_plan.collections if c.file_fields]
    file_ids = files.staged_file_ids(staged)
    if not file_ids:
        return files.FileCopy()
    copied = files.copy_files(files_from.source, target, file_ids, files_from.source_wins, files_from.remote_sync_user)
    log.info("Remote %s: files referenced by this run's items: %s", files_from.remote.name, copied.describe())
    return copied


def refresh_changed_files(files_from: FileSource, sync_plan: SyncPlan, target: DirectusHook) -> files.FileCopy:
    """Bring the remote's copies of files replaced or edited on the source in the run's window up to date (see
    engine/files.py): such a change reaches the remote with no item written."""
    remote = files_from.remote
    refreshed = files.refresh_copies(files_from.source, target, sync_plan.changed_since, remote.batch_size,
                                     files_from.source_wins, files_from.remote_sync_user)
    log.info("Remote %s: copies of files changed on the source %s: %s", remote.name,
             f"since {sync_plan.changed_since}" if sync_plan.changed_since else "(all, a full copy)",
             refreshed.describe())
    return refreshed


def prune_released_files(remote: RemoteSource, sync_plan: SyncPlan, target: DirectusHook) -> files.FilePrune:
    """Delete the files the run's writes released on the remote that nothing references any more (the row's
    ``prune_files``, see engine/files.py). Files it cannot check are left, and the log says why."""
    released = [file_id for c in sync_plan.collections if c.released_files_path
                for file_id in read_staged(ObjectStoragePath(c.released_files_path), c.released_files, "filter_schema")]
    if not released:
        return files.FilePrune()
    pruned = files.prune_files(target, released)
    (log.warning if pruned.problem else log.info)("Remote %s: files this run's items no longer reference: %s",
                                                  remote.name, pruned.describe())
    return pruned


def _staged_writes(planned: CollectionPlan, action: Action) -> Iterator[dict[str, Any]]:
    """The staged creates or updates of ``planned``, read one at a time."""
    if action == "create":
        return read_staged(ObjectStoragePath(planned.creates_path), planned.creates, "filter_schema")
    return read_staged(ObjectStoragePath(planned.updates_path), planned.updates, "filter_schema")


def origin_recorder(engine: Engine, remote: RemoteSource, planned: CollectionPlan) -> origins.Recorder | None:
    """What records, as the remote accepts them, the origins of ``planned``'s writes (see origins.py)."""
    if not planned.origins_path:
        return None
    staged = read_staged(ObjectStoragePath(planned.origins_path), planned.origins, "filter_schema")
    return origins.Recorder(engine, remote.remote_conn_id, planned.collection, staged)


def run_type(context: Mapping[str, Any]) -> str:
    run_type = context["dag_run"].run_type
    return str(getattr(run_type, "value", run_type))


def cleanup_staging(context: Mapping[str, Any]) -> None:
    remove_folder(run_folder(context["dag"].dag_id, context["run_id"]))


def hook_for(remote: RemoteSource | BrokenRemote, conn_id: str) -> DirectusHook:
    if isinstance(remote, BrokenRemote):
        return DirectusHook(directus_conn_id=conn_id)
    return DirectusHook(directus_conn_id=conn_id, timeout=remote.http_timeout_seconds, retries=remote.http_retries,
                        pool_size=max(8, remote.write_concurrency))


def _resolved(value: Any) -> datetime | None:
    """Airflow hands some context values as lazy proxies, and a proxy of None is not ``None``."""
    if not value:
        return None
    resolved: datetime = getattr(value, "__wrapped__", value)
    return resolved


def run_window(remote: RemoteSource, context: Mapping[str, Any], synced_until: datetime | None) -> Window:
    """The window of a sync DAG's run (event-mode runs have theirs in :mod:`.watermark`).

    It starts at the end of the last successful window (``synced_until``, from the ledger; else Airflow's
    ``prev_data_interval_end_success``, which a run without a logical date lacks and which follows
    logical dates, not the order runs synced in). A manual run reads from there to now, not from its
    data interval: that is the last complete interval, which may lie anywhere relative to what was
    synced. Scheduled runs are widened back to their interval's start. A backfill replays its interval,
    widened back only as far as Airflow's previous success (by logical date); the ledger only keeps the
    first interval of a backfill of a remote synced before from becoming a full copy.
    """
    airflow_prev = _resolved(context.get("prev_data_interval_end_success"))
    backfill = run_type(context) == "backfill"
    return compute_window(
        interval_start=None if run_type(context) == "manual" else context.get("data_interval_start"),
        interval_end=_window_end(context),
        prev_success_end=(airflow_prev or synced_until) if backfill else (synced_until or airflow_prev),
        overlap=remote.overlap,
        full_resync=bool(context["params"].get("full_resync")),
    )


def _window_end(context: Mapping[str, Any]) -> datetime:
    """The data interval's end; a manual run's window reaches to now: the latest of its data interval's end,
    its logical date, when it was triggered (``run_after``) and when it started.

    Interval timetables give a manual run the last *complete* interval, which would leave out the edits
    a user triggered the run for; a run without a logical date has no interval at all; ``airflow dags
    test`` with a past date starts "at" that date but is triggered now. Reading further is safe: the next
    run starts from this window's end.
    """
    dag_run = context["dag_run"]
    end: datetime | None = context.get("data_interval_end")
    if run_type(context) == "manual" or end is None:
        moments = [end, context.get("logical_date"), getattr(dag_run, "run_after", None),
                   getattr(dag_run, "start_date", None)]
        end = max(m for m in moments if m is not None)
    return end
