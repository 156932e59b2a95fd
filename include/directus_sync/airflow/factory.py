"""The DAG factory: rows of the remote-sources table in, one sync DAG per published remote out.

Top-level code rules apply. The dag-processor's full parses read the table with a short timeout at most
once per refresh interval (a snapshot file serves the parses in between and keeps the DAGs while the
database is down). A worker that parses the file to run one task reads the table now, validates only the
row of that task's DAG and builds only that DAG: never from a snapshot, which on a worker of its own may
still hold a removed field or an old remote_conn_id. If the table cannot be read, the worker builds
nothing (the task then fails as its DAG is not found) and logs why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

# AsyncCallback, DeadlineAlert, DeadlineReference: in airflow.sdk.__all__, missing from its 3.3.2 stub (.pyi).
from airflow.sdk import (  # type: ignore[attr-defined]
    DAG,
    AsyncCallback,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    get_parsing_context,
    task,
)

# The task bodies import directus_sync.airflow.steps (and event_task) when they run: through them come the HTTP
# provider, requests and aiohttp, which no parse of the DAG file needs (a quarter of a second each parse).
from directus_sync.airflow import schedule
from directus_sync.airflow.alerts import on_deadline_missed
from directus_sync.config import (
    DAG_ID_PREFIX,
    BrokenRemote,
    RemoteSource,
    Status,
    TriggerMode,
    dag_id_for,
    parse_row,
)
from directus_sync.state import sources, tables

if TYPE_CHECKING:  # apply brings the HTTP stack: only the task bodies import it, when they run
    from directus_sync.engine.apply import Action

log = logging.getLogger(__name__)

REFRESH_ENV = "DIRECTUS_SYNC_TABLE_REFRESH_SECONDS"
TABLE_DAG_NAME = "remote_sources"
TAGS = ["directus-sync"]
OWNER = "directus-sync"  # every DAG's tasks' owner (the UI's Owner column and filter)


def generate_dags() -> dict[str, DAG]:
    """Build the DAGs for every published (or broken) row of the remote-sources table.

    When Airflow parses the file to run one task (its parsing context names the DAG), only that DAG.
    """
    wanted = get_parsing_context().dag_id
    if wanted is None:
        configs = _load_configs()
    elif wanted.startswith(DAG_ID_PREFIX):
        configs = _load_configs_for(wanted)
    else:
        return {}
    dags: dict[str, DAG] = {}
    for config in configs:
        for dag_id, build in _builders(config).items():
            if wanted is not None and dag_id != wanted:
                continue
            if dag_id in dags:
                log.error("directus-sync: two rows map to DAG %s; keeping the first", dag_id)
                continue
            dags[dag_id] = build()
    return dags


def _builders(config: RemoteSource | BrokenRemote) -> dict[str, Callable[[], DAG]]:
    """The DAGs one row yields, by id: none for unpublished rows, a reconcile DAG when scheduled."""
    if isinstance(config, BrokenRemote):
        return {config.dag_id: lambda: build_broken_dag(config)}
    if config.status is not Status.PUBLISHED:
        return {}
    builders: dict[str, Callable[[], DAG]] = {config.dag_id: lambda: build_sync_dag(config)}
    if config.reconcile_schedule:
        builders[config.reconcile_dag_id] = lambda: build_sync_dag(config, reconcile=True)
    return builders


def _load_configs() -> list[RemoteSource | BrokenRemote]:
    """Every row, for the dag-processor: through the snapshot, and a DAG reporting an unreadable table."""
    rows, problem = sources.load_rows(
        snapshot=sources.Snapshot.default(),
        max_age=float(os.environ.get(REFRESH_ENV, "30")),
    )
    configs: list[RemoteSource | BrokenRemote] = [parse_row(row) for row in rows]
    if problem:
        log.error("directus-sync: %s", problem)
        configs.append(BrokenRemote(name=TABLE_DAG_NAME, error=problem))
    return configs


def _load_configs_for(dag_id: str) -> list[RemoteSource | BrokenRemote]:
    """The row(s) of one DAG, read from the table now, for a worker about to run one of its steps."""
    conn_id = tables.default_conn_id()
    try:
        rows = sources.read_rows_for_dag(dag_id, conn_id)
    except tables.ConfigStoreError as exc:
        log.error(
            "directus-sync: the task of DAG %s cannot run: the remote-sources table is unreachable through "
            "connection %r (%s). A worker builds its DAG from the table's current row, never from a snapshot "
            "that may be out of date, so no DAG was built. Fix: make connection %r resolvable on this worker "
            "(environment or secrets backend) and its database reachable from this machine, then clear the "
            "task to run it again.", dag_id, conn_id, exc, conn_id)
        if dag_id == dag_id_for(TABLE_DAG_NAME):
            # The DAG that reports the unreadable table: its run reports this outage too.
            return [BrokenRemote(name=TABLE_DAG_NAME, error=str(exc))]
        return []
    return [parse_row(row) for row in rows]


def build_sync_dag(remote: RemoteSource, reconcile: bool = False) -> DAG:
    """The sync DAG of one remote: extract, filter, apply deletes/updates/creates, clean up, notify.

    With ``reconcile`` it is the remote's reconcile DAG instead: same tasks, on the reconcile schedule,
    always a full comparison (and pruning when the row asks for it).
    """
    cron = remote.reconcile_schedule if reconcile and remote.reconcile_schedule else remote.cron
    with DAG(
        dag_id=remote.reconcile_dag_id if reconcile else remote.dag_id,
        description=remote.description or _describe(remote, reconcile),
        schedule=CronDataIntervalTimetable(cron, timezone="UTC") if reconcile else schedule.schedule_for(remote),
        start_date=remote.start_date,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, f"source:{remote.source_conn_id}", f"remote:{remote.remote_conn_id}",
              *(["reconcile"] if reconcile else [])],
        params={
            "full_resync": Param(reconcile, type="boolean",
                                 description="Compare every item of the schema's collections with the remote "
                                             "and repair the differences, instead of the window's changes."),
            "prune": Param(reconcile and remote.reconcile_prune, type="boolean",
                           description="With full_resync: also delete remote items the source does not have "
                                       "(one-way mirrors only)."),
            "dry_run": Param(False, type="boolean",
                             description="Extract and plan only: log (and return as filter_schema's result) what "
                                         "the run would create, update, delete and prune and which conflicts it "
                                         "would settle, and write nothing: no remote write, no ledger row, no "
                                         "lease, no Asset events; the next run still reads this window."),
        },
        default_args={"owner": OWNER, "retries": remote.retries, "retry_delay": timedelta(minutes=1)},
        deadline=_deadline(remote, reconcile),
        doc_md=_doc(remote),
    ) as dag:
        if remote.listens_to_events and not reconcile:
            _add_event_tasks(remote)
            return dag

        # Each step returns its typed result as JSON (see engine/results.py) and the factory hands it on as a
        # TaskFlow argument. Tasks returning dicts would push each key as an XCom of its own; one is enough.

        # From extraction to the last write the run holds the remote's lease, so that no other run writing
        # the remote (its reconcile DAG, another row's DAG) interleaves with it; record_run gives it back.
        @task(multiple_outputs=False)
        def extract_changes(**context: Any) -> dict[str, Any]:
            from directus_sync.airflow import failures, steps
            from directus_sync.engine import results, staging

            with failures.errors_recorded(context), steps.lease_held(remote, context, first=True):
                # The next tasks may run on other workers (event mode's single task needs no such check).
                staging.require_shared()
                return results.dump(steps.extract_changes(remote, context))

        @task(multiple_outputs=False)
        def filter_schema(extracted: dict[str, Any], **context: Any) -> dict[str, Any]:
            from directus_sync.airflow import failures, steps
            from directus_sync.engine import results

            with failures.errors_recorded(context):
                upstream = results.Extracted.model_validate(extracted)
                steps.require_same_row(remote, upstream.row)  # before the lease: the remote may be another now
                with steps.lease_held(remote, context, first=False):
                    return results.dump(steps.filter_schema(remote, upstream, context))

        @task(multiple_outputs=False)
        def apply_deletes(planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            return _apply(remote, planned, "delete", context)

        # Refused items fail an apply task only after it wrote everything else; the next apply runs anyway.
        @task(multiple_outputs=False, trigger_rule="all_done_min_one_success")
        def apply_updates(planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            return _apply(remote, planned, "update", context)

        @task(multiple_outputs=False, trigger_rule="all_done_min_one_success")
        def apply_creates(planned: dict[str, Any], **context: Any) -> dict[str, Any]:
            return _apply(remote, planned, "create", context)

        @task
        def cleanup_staging(**context: Any) -> None:
            from directus_sync.airflow import steps

            steps.cleanup_staging(context)

        manifest = extract_changes()
        sync_plan = filter_schema(manifest)  # type: ignore[arg-type]  # TaskFlow passes XComArgs
        # Deletes first: a unique value freed by a delete can then be taken. Creates before updates: an update
        # may point at an item created in this run, and the update pass sets the references creates defer.
        deletes = apply_deletes(sync_plan)  # type: ignore[arg-type]
        updates = apply_updates(sync_plan)  # type: ignore[arg-type]
        creates = apply_creates(sync_plan)  # type: ignore[arg-type]
        deletes >> creates >> updates
        [deletes, updates, creates] >> cleanup_staging()
        # Both read the run's outcome from every step's result (a failed step's is its failure record).
        _add_outcome_tasks(remote, [manifest, sync_plan, deletes, updates, creates])
    return dag


def _apply(remote: RemoteSource, planned: dict[str, Any], action: Action, context: Any) -> dict[str, Any]:
    """The body of ``apply_deletes``, ``apply_updates`` and ``apply_creates``: skipped in a dry run; the row
    checked before the lease is renewed (the remote may be another now)."""
    from directus_sync.airflow import failures, steps
    from directus_sync.engine import results

    steps.skip_in_dry_run(context)
    with failures.errors_recorded(context):
        upstream = results.Planned.model_validate(planned)
        steps.require_same_row(remote, upstream.row)
        with steps.lease_held(remote, context, first=False):
            return results.dump(steps.apply_writes(remote, upstream, action, context))


def _add_event_tasks(remote: RemoteSource) -> None:
    """The event-mode DAG: the whole sync in one task, since each task start costs seconds of latency."""

    @task(multiple_outputs=False)
    def sync_changes(**context: Any) -> dict[str, Any]:
        from directus_sync.airflow import event_task, failures
        from directus_sync.engine import results

        with failures.errors_recorded(context) as delivered:
            return results.dump(event_task.run_sync(remote, context, delivered))

    _add_outcome_tasks(remote, [sync_changes()])


def _add_outcome_tasks(remote: RemoteSource, upstream: list[Any]) -> None:
    """``record_run`` and ``notify_on_failure``, downstream of the sync tasks whose results (XComArgs)
    are ``upstream``: a step that failed delivers its failure record, one that did not run or was skipped
    delivers ``None`` (Airflow resolves a missing return value to ``None``)."""

    # Every run is recorded, failed ones too; only successful ones emit Asset events.
    @task(multiple_outputs=False, trigger_rule="all_done",
          outlets=[schedule.asset_for(remote, c) for c in remote.collections])
    def record_run(*step_results: dict[str, Any] | None, **context: Any) -> dict[str, Any]:
        from directus_sync.airflow import outcome

        return outcome.record_run(remote, step_results, context)

    record_run(*upstream)
    _add_notify_on_failure(remote, upstream)


def _add_notify_on_failure(remote: RemoteSource | BrokenRemote, upstream: list[Any]) -> None:
    """``notify_on_failure``: reports the failures among the results ``upstream`` (XComArgs) when one failed."""

    @task(trigger_rule="one_failed", retries=0)
    def notify_on_failure(*step_results: dict[str, Any] | None, **context: Any) -> None:
        from directus_sync.airflow import outcome

        outcome.notify_on_failure(remote, step_results, context)

    notify_on_failure(*upstream)


def _deadline(remote: RemoteSource, reconcile: bool) -> DeadlineAlert | None:
    """A Deadline Alert when the row sets ``deadline``: measured from the moment a run is queued."""
    if remote.deadline is None or reconcile:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=remote.deadline,
        callback=AsyncCallback(on_deadline_missed, kwargs={
            "remote": remote.name,
            "dag_id": remote.dag_id,
            "deadline": _human(remote.deadline),
            "source_conn_id": remote.source_conn_id,
            "notify_users": list(remote.notify_users),
            "alerts": [c.model_dump(mode="json") for c in remote.alerts],
        }),
    )


def _human(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")


def build_broken_dag(broken: BrokenRemote) -> DAG:
    """A DAG that shows, and on every run reports, why its row cannot be synced."""
    log.error("directus-sync: %s", broken.error)
    with DAG(
        dag_id=broken.dag_id,
        description=f"CONFIGURATION ERROR: {broken.error}"[:1000],
        schedule=CronDataIntervalTimetable(broken.schedule, timezone="UTC"),
        start_date=RemoteSource.model_fields["start_date"].default,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "configuration-error"],
        default_args={"owner": OWNER},
        doc_md=f"### Configuration error\n\n{broken.error}\n\nFix the row in the remote-sources table.",
    ) as dag:

        @task(retries=0)
        def validate_configuration(**context: Any) -> None:
            from directus_sync.airflow import failures, outcome

            with failures.errors_recorded(context):
                outcome.validate_configuration(broken)

        _add_notify_on_failure(broken, [validate_configuration()])
    return dag


def _describe(remote: RemoteSource, reconcile: bool) -> str:
    what = "Reconcile" if reconcile else "Sync"
    return (f"{what} {', '.join(remote.collections)} from {remote.source_conn_id} to "
            f"{remote.remote_conn_id} ({_when(remote, reconcile)})")


def _when(remote: RemoteSource, reconcile: bool) -> str:
    """What starts the DAG's runs, in words."""
    if reconcile:
        return str(remote.reconcile_schedule)
    on_changes = f"on source changes, polled every {remote.event_poll_seconds:g} s"
    return {TriggerMode.SCHEDULE: remote.schedule, TriggerMode.EVENTS: on_changes,
            TriggerMode.BOTH: f"{on_changes}, and {remote.schedule}"}[remote.trigger]


def _doc(remote: RemoteSource) -> str:
    lines = [f"### Directus sync: {remote.name}", "",
             f"From connection `{remote.source_conn_id}` to `{remote.remote_conn_id}`, "
             f"runs: {_when(remote, reconcile=False)}.", "",
             "| collection | fields |", "| --- | --- |"]
    lines += [f"| `{c.name}` | {', '.join(f'`{f}`' for f in c.fields)} |" for c in remote.sync_schema]
    lines += ["", "Trigger with `full_resync: true` to copy every item instead of the window's changes, or with "
              "`dry_run: true` to see what a run would write without writing it."]
    return "\n".join(lines)
