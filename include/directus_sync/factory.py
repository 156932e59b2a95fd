"""The DAG factory: rows of the remote-sources table in, one sync DAG per published remote out.

Top-level code rules apply: the table is read with a short timeout at most once per refresh interval
(a snapshot file serves the parses in between and keeps the DAGs while the database is down), and a
worker that parses the file to run one task builds only that DAG, from the snapshot.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, get_parsing_context, task

from directus_sync import tasks
from directus_sync.config import DAG_ID_PREFIX, BrokenRemote, RemoteSource, Status, parse_row
from directus_sync.store import DEFAULT_DB_CONN_ID, Snapshot, load_rows

log = logging.getLogger(__name__)

DB_CONN_ENV = "DIRECTUS_SYNC_DB_CONN_ID"
REFRESH_ENV = "DIRECTUS_SYNC_TABLE_REFRESH_SECONDS"
TABLE_DAG_NAME = "remote_sources"
TAGS = ["directus-sync"]


def generate_dags() -> dict[str, DAG]:
    """Build the DAGs for every published (or broken) row of the remote-sources table."""
    wanted = get_parsing_context().dag_id
    if wanted is not None and not wanted.startswith(DAG_ID_PREFIX):
        return {}
    configs = _load_configs(offline=wanted is not None)
    if wanted is not None and all(c.dag_id != wanted for c in configs):
        # A remote added since the snapshot was taken: the table has it.
        configs = _load_configs(offline=False)
    dags = {}
    for config in configs:
        if isinstance(config, RemoteSource) and config.status is not Status.PUBLISHED:
            continue
        if wanted is not None and config.dag_id != wanted:
            continue
        if config.dag_id in dags:
            log.error("directus-sync: two rows map to DAG %s; keeping the first", config.dag_id)
            continue
        dags[config.dag_id] = build_dag(config)
    return dags


def _load_configs(offline: bool) -> list[RemoteSource | BrokenRemote]:
    rows, problem = load_rows(
        conn_id=os.environ.get(DB_CONN_ENV, DEFAULT_DB_CONN_ID),
        snapshot=Snapshot.default(),
        max_age=float(os.environ.get(REFRESH_ENV, "30")),
        offline=offline,
    )
    configs: list[RemoteSource | BrokenRemote] = [parse_row(row) for row in rows]
    if problem:
        log.error("directus-sync: %s", problem)
        configs.append(BrokenRemote(name=TABLE_DAG_NAME, error=problem))
    return configs


def build_dag(config: RemoteSource | BrokenRemote) -> DAG:
    if isinstance(config, BrokenRemote):
        log.error("directus-sync: %s", config.error)
        return build_broken_dag(config)
    return build_sync_dag(config)


def build_sync_dag(remote: RemoteSource) -> DAG:
    """The sync DAG of one remote: extract, filter, apply deletes/updates/creates, clean up, notify."""
    with DAG(
        dag_id=remote.dag_id,
        description=remote.description or _describe(remote),
        schedule=CronDataIntervalTimetable(remote.cron, timezone="UTC"),
        start_date=remote.start_date,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, f"source:{remote.source_conn_id}", f"remote:{remote.remote_conn_id}"],
        params={"full_resync": Param(False, type="boolean",
                                     description="Copy every item of the schema's collections "
                                                 "instead of the changes in the run's window.")},
        default_args={"retries": remote.retries, "retry_delay": timedelta(minutes=1)},
        doc_md=_doc(remote),
    ) as dag:

        @task
        def extract_changes(**context: Any) -> dict[str, Any]:
            with tasks.errors_recorded(context):
                return tasks.extract_changes(remote, context)

        @task
        def filter_schema(manifest: dict[str, Any], **context: Any) -> dict[str, Any]:
            with tasks.errors_recorded(context):
                return tasks.filter_schema(remote, manifest)

        @task
        def apply_deletes(sync_plan: dict[str, Any], **context: Any) -> dict[str, int]:
            with tasks.errors_recorded(context):
                return tasks.apply_writes(remote, sync_plan, "deletes")

        @task
        def apply_updates(sync_plan: dict[str, Any], **context: Any) -> dict[str, int]:
            with tasks.errors_recorded(context):
                return tasks.apply_writes(remote, sync_plan, "updates")

        @task
        def apply_creates(sync_plan: dict[str, Any], **context: Any) -> dict[str, int]:
            with tasks.errors_recorded(context):
                return tasks.apply_writes(remote, sync_plan, "creates")

        @task
        def cleanup_staging(**context: Any) -> None:
            tasks.cleanup_staging(context)

        @task(trigger_rule="one_failed", retries=0)
        def notify_on_failure(**context: Any) -> None:
            tasks.notify_on_failure(remote, context)

        manifest = extract_changes()
        sync_plan = filter_schema(manifest)  # type: ignore[arg-type]  # TaskFlow passes XComArgs
        # Deletes first, creates last: a unique value freed by a delete can then be taken by a create.
        deletes = apply_deletes(sync_plan)  # type: ignore[arg-type]
        updates = apply_updates(sync_plan)  # type: ignore[arg-type]
        creates = apply_creates(sync_plan)  # type: ignore[arg-type]
        deletes >> updates >> creates >> cleanup_staging()
        [manifest, sync_plan, deletes, updates, creates] >> notify_on_failure()
    return dag


def build_broken_dag(broken: BrokenRemote) -> DAG:
    """A DAG that shows, and on every run reports, why its row cannot be synced."""
    with DAG(
        dag_id=broken.dag_id,
        description=f"CONFIGURATION ERROR: {broken.error}"[:1000],
        schedule=CronDataIntervalTimetable(broken.schedule, timezone="UTC"),
        start_date=RemoteSource.model_fields["start_date"].default,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "configuration-error"],
        doc_md=f"### Configuration error\n\n{broken.error}\n\nFix the row in the remote-sources table.",
    ) as dag:

        @task(retries=0)
        def validate_configuration(**context: Any) -> None:
            with tasks.errors_recorded(context):
                tasks.validate_configuration(broken)

        @task(trigger_rule="one_failed", retries=0)
        def notify_on_failure(**context: Any) -> None:
            tasks.notify_on_failure(broken, context)

        validate_configuration() >> notify_on_failure()
    return dag


def _describe(remote: RemoteSource) -> str:
    return (f"Sync {', '.join(remote.collections)} from {remote.source_conn_id} to "
            f"{remote.remote_conn_id} ({remote.schedule})")


def _doc(remote: RemoteSource) -> str:
    lines = [f"### Directus sync: {remote.name}", "",
             f"From connection `{remote.source_conn_id}` to `{remote.remote_conn_id}`, "
             f"schedule `{remote.schedule}` (each run covers its data interval).", "",
             "| collection | fields |", "| --- | --- |"]
    lines += [f"| `{c.name}` | {', '.join(f'`{f}`' for f in c.fields)} |" for c in remote.sync_schema]
    lines += ["", "Trigger with `full_resync: true` to copy every item instead of the window's changes."]
    return "\n".join(lines)
