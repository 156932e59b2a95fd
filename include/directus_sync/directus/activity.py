"""Directus's activity log, as the sync reads it: which actions change items, the filters that select them,
and the timestamps Directus writes and accepts.

One definition for the sync hook (extraction, conflict checks) and the async hook (the event trigger).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# The activity actions that change items.
ITEM_ACTIONS = ("create", "update", "delete")


def activity_filter(
    collections: Sequence[str],
    after_id: int,
    exclude_user: str | None,
    window: tuple[str, str] | None = None,
    spans: Sequence[tuple[int, int]] = (),
) -> dict[str, Any]:
    """The ``/activity`` filter for item changes in a time window or id spans; activity without a user
    (flows, scripts) is kept."""
    where: list[dict[str, Any]] = [{"id": {"_between": [low, high]}} for low, high in spans]
    if window is not None:
        where.append({"_and": [{"timestamp": {"_gte": window[0]}}, {"timestamp": {"_lt": window[1]}}]})
    clauses: list[dict[str, Any]] = [
        {"collection": {"_in": list(collections)}},
        {"action": {"_in": list(ITEM_ACTIONS)}},
        {"id": {"_gt": after_id}},
        {"_or": where or [{"id": {"_null": True}}]},  # nothing to read: a clause no row matches
    ]
    return {"_and": [*clauses, *_not_by(exclude_user)]}


def changes_filter(
    collection: str, exclude_user: str | None, since: str | None, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``/activity`` filter for item changes of ``collection`` (of ``keys``, when given) not made by
    ``exclude_user``, at or after ``since``."""
    clauses: list[dict[str, Any]] = [
        {"collection": {"_eq": collection}},
        {"action": {"_in": list(ITEM_ACTIONS)}},
    ]
    if keys is not None:
        clauses.append({"item": {"_in": list(keys)}})
    clauses += _not_by(exclude_user)
    if since:
        clauses.append({"timestamp": {"_gte": since}})
    return {"_and": clauses}


def newest_change_params(collections: Sequence[str], after_id: int, exclude_user: str | None) -> dict[str, Any]:
    """``/activity`` query for the newest item change after ``after_id`` not made by ``exclude_user``.

    One row at most, sorted by ``id`` descending: the cheapest question that both says "something
    happened" and gives the new cursor.
    """
    clauses: list[dict[str, Any]] = [
        {"id": {"_gt": after_id}},
        {"collection": {"_in": list(collections)}},
        {"action": {"_in": list(ITEM_ACTIONS)}},
        *_not_by(exclude_user),
    ]
    return {"filter": json.dumps({"_and": clauses}), "sort": "-id", "limit": 1, "fields": "id,timestamp"}


def _not_by(user: str | None) -> list[dict[str, Any]]:
    """The clause keeping changes not made by ``user``, and those without a user (flows, scripts).

    ``_neq`` alone would also drop rows whose user is NULL (SQL three-valued logic).
    """
    return [{"_or": [{"user": {"_neq": user}}, {"user": {"_null": True}}]}] if user else []


def parse_timestamp(timestamp: str) -> datetime:
    """An activity timestamp as Directus writes it (ISO 8601, ``Z`` or an offset)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def iso_timestamp(moment: datetime) -> str:
    """A moment as Directus filters take it: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
