"""Failure notifications: a Directus notification on the source instance for each chosen user.

Messages name the remote, the Airflow run, the failed tasks with their errors, and the collections and
keys involved; never a token or an item's contents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from directus_sync.directus.hook import DirectusHook

log = logging.getLogger(__name__)

MAX_KEYS_LISTED = 20


@dataclass
class FailureReport:
    """What went wrong in one run, gathered by the notify task."""

    remote: str
    dag_id: str
    run_id: str
    errors: Mapping[str, str]
    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return f"directus-sync: sync to remote '{self.remote}' failed"

    @property
    def message(self) -> str:
        lines = [f"The sync of remote **{self.remote}** failed.", "",
                 f"Airflow run: `{self.dag_id}` / `{self.run_id}`", ""]
        for task_id, error in self.errors.items():
            lines.append(f"- **{task_id}**: {error}")
        for collection, total in self.counts.items():
            keys = list(self.keys.get(collection, ()))[:MAX_KEYS_LISTED]
            shown = ", ".join(keys)
            more = f" and {total - len(keys)} more" if total > len(keys) else ""
            lines.append(f"- collection `{collection}`: {total} changes pending"
                         + (f" (keys {shown}{more})" if keys else ""))
        if not self.errors:
            lines.append("- no task recorded an error; see the task logs in Airflow")
        return "\n".join(lines)


def send(source: DirectusHook, users: Sequence[str], report: FailureReport) -> int:
    """Notify ``users`` on the source instance; return how many notifications were created."""
    if not users:
        log.warning("No notify_users on remote %s; the failure is only in the Airflow logs", report.remote)
        return 0
    source.notify(users, report.subject, report.message)
    log.info("Notified %d users on %s", len(users), source.directus_conn_id)
    return len(users)
