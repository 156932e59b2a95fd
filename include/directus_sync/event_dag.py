"""The body of an event-mode sync DAG's one sync task: extract, plan and apply, then advance the watermark.

A change should reach the remote within seconds, and every task of a run costs a process start, a DAG
parse and a scheduler round trip (about 3-5 s each on a small machine). So event-mode DAGs run the same
steps as the scheduled DAG (``extract_changes``, ``filter_schema``, ``apply_deletes``, ``apply_updates``,
``apply_creates``, ``cleanup_staging``; the same functions, the same staging files) in one task,
``sync_changes``, and then advance the watermark the next run starts from.
"""

from __future__ import annotations

from typing import Any

from directus_sync import events, tasks
from directus_sync.config import RemoteSource


def run_sync(remote: RemoteSource, context: Any) -> dict[str, Any]:
    """Extract, plan and apply one run's changes; advance the watermark when everything was written.

    Refused (poison) items do not stop the other actions, as in the scheduled DAG: deletes, updates and
    creates all run, then the refusals fail the task together. The remote's lease is held throughout
    (waiting for it first), as by the scheduled DAG's tasks; ``record_run`` gives it back.

    A dry run extracts and plans only, as the scheduled DAG's does: it returns the plan's summary, takes
    no lease and leaves the watermark where it was, so the next run still reads this window.
    """
    if tasks.is_dry_run(context):
        return tasks.filter_schema(remote, tasks.extract_changes(remote, context), context)
    with tasks.lease_held(remote, context, first=True):
        return _sync(remote, context)


def _sync(remote: RemoteSource, context: Any) -> dict[str, dict[str, int]]:
    manifest = tasks.extract_changes(remote, context)
    sync_plan = tasks.filter_schema(remote, manifest, context)
    written: dict[str, dict[str, int]] = {}
    refused: list[str] = []
    # Deletes first, creates last: a unique value freed by a delete can then be taken by a create.
    for action in ("delete", "update", "create"):
        try:
            written[action] = tasks.apply_writes(remote, sync_plan, action, context)
        except tasks.PoisonItemsError as exc:
            refused.append(str(exc))
    if refused:
        raise tasks.PoisonItemsError("; ".join(refused))
    tasks.cleanup_staging(context)
    events.mark_synced(remote, context)
    return written
