"""The body of an event-mode sync DAG's one sync task: extract, plan and apply, then advance the watermark.

A change should reach the remote within seconds, and every task of a run costs a process start, a DAG
parse and a scheduler round trip (about 3-5 s each on a small machine). So event-mode DAGs run the same
steps as the scheduled DAG (``extract_changes``, ``filter_schema``, ``apply_deletes``, ``apply_updates``,
``apply_creates``, ``cleanup_staging``; the same functions, the same staging files) in one task,
``sync_changes``, and then advance the watermark the next run starts from.
"""

from __future__ import annotations

from typing import Any

from directus_sync.airflow import failures, steps, watermark
from directus_sync.config import RemoteSource
from directus_sync.engine.results import StepResult, Synced


def run_sync(remote: RemoteSource, context: Any, delivered: list[StepResult] | None = None) -> Synced:
    """Extract, plan and apply one run's changes; advance the watermark when everything was written.

    Each step's result goes into ``delivered`` as it is done (the list :func:`failures.errors_recorded`
    yields, so that a failed run still reports its window, plan and counts), and the run returns them.
    Refused (poison) items do not stop the other actions, as in the scheduled DAG: deletes, updates and
    creates all run, then the refusals fail the task together. The remote's lease is held throughout
    (waiting for it first), as by the scheduled DAG's tasks; ``record_run`` gives it back.

    A dry run extracts and plans only, as the scheduled DAG's does: its plan result holds the plan's
    summary; it takes no lease and leaves the watermark where it was, so the next run still reads this window.
    """
    done = delivered if delivered is not None else []
    if steps.is_dry_run(context):
        extracted = steps.extract_changes(remote, context)
        done.append(extracted)
        done.append(steps.filter_schema(remote, extracted, context))
    else:
        with steps.lease_held(remote, context, first=True):
            _sync(remote, context, done)
    return Synced(steps=done)


def _sync(remote: RemoteSource, context: Any, done: list[StepResult]) -> None:
    extracted = steps.extract_changes(remote, context)
    done.append(extracted)
    planned = steps.filter_schema(remote, extracted, context)
    done.append(planned)
    refused: list[str] = []
    # In the scheduled DAG's order: deletes, creates, then updates (which set the references creates defer).
    for action in ("delete", "create", "update"):
        try:
            done.append(steps.apply_writes(remote, planned, action, context))
        except failures.PoisonItemsError as exc:
            done += exc.delivered  # what the action wrote besides the refused items
            refused.append(str(exc))
    if refused:
        raise failures.PoisonItemsError("; ".join(refused))
    steps.cleanup_staging(context)
    if extracted.window.event_window:  # a backfill's interval must not move the watermark
        watermark.mark_synced(remote, extracted.window.end)
