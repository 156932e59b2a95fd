"""Dry runs: what a sync would write, read from its real plan, with nothing written.

A dry run extracts and plans exactly as a real run does (the same functions, the same staged files), so
what it shows is what the next run would do, as of now. The summary is read from the plan's staged
files: counts, the first keys of each kind of write, and the NAMES of the fields an update would change.
Never values: items may hold personal or secret data, and summaries end up in logs and terminals.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk import ObjectStoragePath

from directus_sync.config import ConflictPolicy
from directus_sync.engine.plan import CollectionPlan, Conflict, SyncPlan
from directus_sync.engine.staging import read_jsonl

# Keys listed per collection and kind of write; the counts always cover everything.
MAX_KEYS = 10

NOTHING_WRITTEN = ("dry run: nothing was written (no remote write, no ledger row, no origins, conflicts or "
                   "dead-letter changes, no window or cursor advance)")


def summarize(sync_plan: SyncPlan, conflicts: Sequence[Conflict], policy: ConflictPolicy,
              limit: int = MAX_KEYS) -> dict[str, Any]:
    """The JSON-able summary of a plan: per collection, counts and the first ``limit`` keys of each kind."""
    return {"window": sync_plan.window, "policy": policy.value,
            "collections": [_collection(c, [x for x in conflicts if x.collection == c.collection], limit)
                            for c in sync_plan.collections]}


def _collection(plan: CollectionPlan, conflicts: list[Conflict], limit: int) -> dict[str, Any]:
    updated_fields: Counter[str] = Counter()
    update_keys: list[dict[str, Any]] = []
    deferred = 0
    # The whole updates file is read for the field tally, but only field names and ``limit`` keys are kept.
    for record in read_jsonl(ObjectStoragePath(plan.updates_path)):
        if record.get("deferred"):  # part of a create (see plan.py), not an update of its own
            deferred += 1
            continue
        fields = sorted(record["changes"])
        updated_fields.update(fields)
        if len(update_keys) < limit:
            update_keys.append({"key": str(record["key"]), "fields": fields})
    return {
        "collection": plan.collection, "creates": plan.creates, "updates": plan.updates - deferred,
        "deferred_references": deferred, "deletes": plan.deletes,
        "prunes": plan.prunes, "unchanged": plan.unchanged, "conflicts": plan.conflicts,
        "dead_letters_resolved": len(plan.resolved_dead_letters),
        "create_keys": _first(limit, (r[plan.pk] for r in read_jsonl(ObjectStoragePath(plan.creates_path)))),
        "update_keys": update_keys,
        "updated_fields": dict(sorted(updated_fields.items())),
        "delete_keys": _first(limit, read_jsonl(ObjectStoragePath(plan.deletes_path))),
        "prune_keys": _first(limit, read_jsonl(ObjectStoragePath(plan.prunes_path))) if plan.prunes_path else [],
        "conflict_list": [{"key": c.key, "source_at": c.source_at, "remote_at": c.remote_at, "winner": c.winner}
                          for c in conflicts[:limit]],
    }


def _first(limit: int, keys: Iterable[Any]) -> list[str]:
    return [str(k) for k in itertools.islice(keys, limit)]


def render(summary: dict[str, Any]) -> list[str]:
    """The summary as text lines, for a log or a terminal."""
    lines = [f"dry run, reading {summary['window']}; conflict policy {summary['policy']}"]
    for c in summary["collections"]:
        lines.append(f"{c['collection']}: {c['creates']} to create, {c['updates']} to update, "
                     f"{c['deletes']} to delete, {c['prunes']} to prune, {c['unchanged']} already equal, "
                     f"{c['conflicts']} conflicts" + (f", {c['dead_letters_resolved']} dead letters resolved"
                                                      if c["dead_letters_resolved"] else ""))
        lines += _keys_line("create", c["create_keys"], c["creates"])
        if c.get("deferred_references"):
            lines.append(f"  {c['deferred_references']} of the created items get their deferred references (a cycle "
                         "or self reference) right after the creates")
        updates = [f"{u['key']} ({', '.join(u['fields'])})" for u in c["update_keys"]]
        lines += _keys_line("update", updates, c["updates"])
        if c["updated_fields"]:
            lines.append("  fields to update: " + ", ".join(f"{f} ({n})" for f, n in c["updated_fields"].items()))
        lines += _keys_line("delete", c["delete_keys"], c["deletes"])
        lines += _keys_line("prune (the source is asked again right before each delete)", c["prune_keys"],
                            c["prunes"])
        lines += [f"  conflict: {_conflict(x)}" for x in c["conflict_list"]]
        if c["conflicts"] > len(c["conflict_list"]):
            lines.append(f"  ... and {c['conflicts'] - len(c['conflict_list'])} more conflicts")
    lines.append(NOTHING_WRITTEN)
    return lines


def _keys_line(what: str, keys: list[str], total: int) -> list[str]:
    if not total:
        return []
    more = f" ... and {total - len(keys)} more" if total > len(keys) else ""
    return [f"  {what}: {', '.join(keys)}{more}"]


def _conflict(conflict: dict[str, Any]) -> str:
    source_at = conflict["source_at"] or "unknown (no change the source shows)"
    outcome = ("the remote's newer value is kept, the source's is not written" if conflict["winner"] == "remote"
               else "the source's value is written over the remote's (source_wins)")
    return (f"key {conflict['key']}: source changed {source_at}, remote changed {conflict['remote_at']}; "
            f"winner {conflict['winner']}: {outcome}")
