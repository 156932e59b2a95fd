"""The end of a run: ``record_run`` writes the ledger and announces the Assets, ``notify_on_failure`` tells the
remote's users and alert channels what failed. Both read the run's outcome from the steps' results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from directus_sync.airflow import alerts
from directus_sync.airflow.failures import ConfigurationError
from directus_sync.airflow.schedule import asset_for
from directus_sync.airflow.steps import hook_for, is_dry_run, run_holder, run_type
from directus_sync.config import BrokenRemote, RemoteSource
from directus_sync.directus import notify
from directus_sync.engine.plan import SyncPlan
from directus_sync.engine.results import RunOutcome
from directus_sync.state import leases, ledger, tables

log = logging.getLogger(__name__)


def record_run(remote: RemoteSource, results: Sequence[Mapping[str, Any] | None],
               context: Mapping[str, Any]) -> dict[str, Any]:
    """Write the run's ledger rows from its sync tasks' ``results``; on success, emit one Asset event per
    collection with its counts.

    The run succeeded when every sync task delivered its result (see engine/results.py). A failed run is recorded
    too, then this task skips: Asset events only ever announce synced data. Either way the run gives back
    its lease on the remote. A dry run is neither recorded (its window was not synced, so the next run must
    read it) nor announced, and held no lease.
    """
    if is_dry_run(context):
        log.info("dry run: nothing recorded")
        raise AirflowSkipException("dry run: no ledger row and no Asset events")
    try:
        return _record_run(remote, RunOutcome.of(results), context)
    finally:
        leases.release(tables.engine_for(), remote.remote_conn_id, run_holder(context))


def _record_run(remote: RemoteSource, outcome: RunOutcome, context: Mapping[str, Any]) -> dict[str, Any]:
    status = ledger.RunStatus.SUCCESS if outcome.succeeded else ledger.RunStatus.FAILED
    window = outcome.window
    engine = tables.engine_for()
    counts = _collection_counts(remote, outcome, ledger.dead_letters_of_run(engine, remote.name, context["run_id"]))
    errors = outcome.errors
    dag_run = context["dag_run"]
    run = ledger.RunRecord(
        remote=remote.name, dag_id=context["dag"].dag_id, run_id=context["run_id"], status=status,
        finished_at=datetime.now(UTC), run_type=run_type(context),
        window_start=window.start if window else None, window_end=window.end if window else None,
        full_copy=bool(window and window.full), full_reason=window.full_reason if window else None,
        cursor=window.cursor if window and status is ledger.RunStatus.SUCCESS else None,
        started_at=getattr(dag_run, "start_date", None),
        error="; ".join(f"{t}: {e}" for t, e in errors.items()) or None, collections=counts)
    ledger.record(engine, run)
    summary = {c.collection: c.written for c in counts}
    log.info("Run recorded as %s: %s", status.value, summary)
    if status is not ledger.RunStatus.SUCCESS:
        raise AirflowSkipException(f"the run failed ({', '.join(errors) or 'see the tasks'}); no Asset events")
    for c in counts:
        if c.collection not in remote.collections:
            continue  # a junction behind a listed alias: the DAG declares Assets for listed collections only
        context["outlet_events"][asset_for(remote, c.collection)].extra = {
            "created": c.created, "updated": c.updated, "deleted": c.deleted, "skipped": c.skipped,
            "window_end": window.end.isoformat() if window else None, "run_id": context["run_id"]}
    return {"status": status.value, "written": summary}


def _collection_counts(remote: RemoteSource, outcome: RunOutcome, dead: Mapping[str, int]
                       ) -> list[ledger.CollectionCounts]:
    written = {action: outcome.written(action) for action in ("create", "update", "delete")}
    planned = {c.collection: c for c in outcome.plan.collections} if outcome.plan else {}
    # The listed collections, then those a listed alias brought in (its junction), as the plan wrote them.
    names = [*remote.collections, *(name for name in planned if name not in remote.collections)]
    return [ledger.CollectionCounts(
        collection=name, created=written["create"].get(name, 0), updated=written["update"].get(name, 0),
        deleted=written["delete"].get(name, 0), skipped=planned[name].unchanged if name in planned else 0,
        conflicts=planned[name].conflicts if name in planned else 0, dead_letters=dead.get(name, 0),
    ) for name in names]


def notify_on_failure(remote: RemoteSource | BrokenRemote, results: Sequence[Mapping[str, Any] | None],
                      context: Mapping[str, Any]) -> None:
    """Notify the remote's users of the errors in the run's ``results``, then fail: Airflow's "watcher"
    pattern, so that the run is marked failed even when this task, a leaf of the DAG, did its job."""
    outcome = RunOutcome.of(results)
    errors = outcome.errors
    report = notify.FailureReport(remote=remote.name, dag_id=context["dag"].dag_id, run_id=context["run_id"],
                                  errors=errors)
    if outcome.plan:
        report.keys, report.counts = _pending_keys(outcome.plan)
    summary = "; ".join(f"{t}: {e}" for t, e in errors.items()) or "see the task logs"
    if is_dry_run(context):  # it writes nothing anywhere, notifications included; the run still shows red
        raise AirflowFailException(f"The dry run of remote {remote.name!r} failed: {summary}")
    if remote.source_conn_id is None:
        log.warning("The source connection of %s is unknown; nobody can be notified", remote.name)
    else:
        notify.send(hook_for(remote, remote.source_conn_id), remote.notify_users, report)
    channels = remote.alerts or alerts.global_channels()
    alerts.send(alerts.Alert("run_failed", remote.name, report.dag_id, report.run_id, report.subject, report.message),
                channels, context)
    raise AirflowFailException(f"The sync of remote {remote.name!r} failed: {summary}")


def validate_configuration(broken: BrokenRemote) -> None:
    raise ConfigurationError(broken.error)


def _pending_keys(sync_plan: SyncPlan) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The first keys of each collection's pending writes, for the message, and their totals.

    Both come from the plan in XCom, not from the staged files: this task may run on another machine,
    after the files are gone.
    """
    keys = {c.collection: c.first_keys for c in sync_plan.collections}
    counts = {c.collection: c.creates + c.updates + c.deletes + c.prunes for c in sync_plan.collections}
    return keys, counts
