"""The Directus hook's request building: activity filters and key chunks; reading collection settings."""

from __future__ import annotations

import json
from typing import Any

from directus_sync.hook import DirectusHook, activity_filter, chunk_keys


def test_the_activity_filter_keeps_item_actions_in_the_window_after_the_cursor() -> None:
    query = activity_filter(["articles"], 41, "2026-11-26T12:00:00.000Z", "2026-11-26T12:05:00.000Z", None)
    clauses = query["_and"]
    assert {"collection": {"_in": ["articles"]}} in clauses
    assert {"action": {"_in": ["create", "update", "delete"]}} in clauses
    assert {"id": {"_gt": 41}} in clauses
    assert {"timestamp": {"_gte": "2026-11-26T12:00:00.000Z"}} in clauses
    assert {"timestamp": {"_lt": "2026-11-26T12:05:00.000Z"}} in clauses


def test_echo_suppression_drops_the_sync_user_but_keeps_activity_without_a_user() -> None:
    query = activity_filter(["a"], 0, "s", "e", "sync-user")
    assert {"_or": [{"user": {"_neq": "sync-user"}}, {"user": {"_null": True}}]} in query["_and"]


def test_key_chunks_stay_under_the_url_budget_and_keep_every_key() -> None:
    keys = [f"{n:032x}" for n in range(1_000)]
    chunks = list(chunk_keys(keys, max_chars=2_000))
    assert [k for chunk in chunks for k in chunk] == keys
    assert all(len(json.dumps(list(chunk))) <= 2_000 for chunk in chunks)
    assert len(chunks) > 1


def test_activity_tracking_is_off_only_when_the_collection_s_accountability_is_null() -> None:
    answers: dict[str, Any] = {
        "/collections/tracked": {"collection": "tracked", "meta": {"accountability": "all"}},
        "/collections/activity_only": {"collection": "activity_only", "meta": {"accountability": "activity"}},
        "/collections/untracked": {"collection": "untracked", "meta": {"accountability": None}},
        "/collections/bare_table": {"collection": "bare_table", "meta": None},  # Directus treats it as "all"
    }

    class Answering(DirectusHook):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            assert method == "GET"
            return answers[path]

    hook = Answering("directus_x")
    assert [hook.activity_tracked(c) for c in ("tracked", "activity_only", "untracked", "bare_table")] == [
        True, True, False, True]
