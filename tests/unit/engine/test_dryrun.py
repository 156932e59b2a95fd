"""Dry runs: the summary read from a real plan, and nothing recorded by the steps a dry run shares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from directus_sync.airflow import event_task, outcome, steps
from directus_sync.config import ConflictPolicy, RemoteSource
from directus_sync.engine import dryrun
from directus_sync.engine.apply import Failure
from directus_sync.engine.extract import ChangeManifest
from directus_sync.engine.plan import ConflictGuard, SyncPlan, plan_collection
from directus_sync.engine.results import Extracted, Failed, Planned, Synced, WindowRecord
from directus_sync.engine.staging import STAGING_URL_ENV, run_folder
from directus_sync.state import ledger, tables

from .test_plan import SHAPE, FakeRemote, guard_for, stage

T1, T2, T3 = "2026-11-26T12:00:00.000Z", "2026-11-26T12:05:00.000Z", "2026-11-26T12:10:00.000Z"
SECRET = "secret value"


def planned(tmp_path: Path) -> tuple[SyncPlan, ConflictGuard]:
    """A plan of 3 creates, 2 updates, 1 delete and 1 conflict (the remote's newer edit of key 7)."""
    folder = ObjectStoragePath(f"file://{tmp_path}")
    changes = stage(folder, [
        ({"id": 1, "title": SECRET}, T3), ({"id": 2, "title": SECRET}, T3), ({"id": 3, "title": SECRET}, T3),
        ({"id": 4, "title": SECRET}, T3), ({"id": 5, "title": SECRET}, T3), ({"id": 6, "title": "same"}, T3),
        ({"id": 7, "title": SECRET}, T1)], [(8, T3), (9, T3)])
    remote = FakeRemote([{"id": 4, "title": "old"}, {"id": 5, "title": "old"}, {"id": 6, "title": "same"},
                         {"id": 7, "title": "edited on the remote"}, {"id": 8, "title": "to delete"}])
    remote.changed_at = {"7": T2}
    guard = guard_for(tmp_path, remote)
    result = plan_collection(remote, changes, SHAPE, folder, batch_size=2, guard=guard)  # type: ignore[arg-type]
    return SyncPlan(run_folder=str(folder), window="activity from A to B", collections=[result]), guard


def test_the_summary_counts_every_write_and_lists_the_first_keys_and_field_names_only(tmp_path: Path) -> None:
    sync_plan, guard = planned(tmp_path)
    summary = dryrun.summarize(sync_plan, guard.conflicts, ConflictPolicy.LAST_WRITER_WINS, limit=2)
    [c] = summary["collections"]
    assert (c["creates"], c["updates"], c["deletes"], c["prunes"], c["unchanged"], c["conflicts"]) == (3, 2, 1, 0, 1, 1)
    assert c["create_keys"] == ["1", "2"]  # bounded by the limit; the count covers all
    assert c["update_keys"] == [{"key": "4", "fields": ["title"]}, {"key": "5", "fields": ["title"]}]
    assert c["updated_fields"] == {"title": 2}
    assert c["delete_keys"] == ["8"]
    assert c["conflict_list"] == [{"key": "7", "source_at": "2026-11-26T12:00:00+00:00",
                                   "remote_at": "2026-11-26T12:05:00+00:00", "winner": "remote"}]

    text = "\n".join(dryrun.render(summary))
    assert "a: 3 to create, 2 to update, 1 to delete, 0 to prune, 1 already equal, 1 conflicts" in text
    assert "  create: 1, 2 ... and 1 more" in text
    assert "  update: 4 (title), 5 (title)" in text
    assert "  fields to update: title (2)" in text
    assert "  delete: 8" in text
    assert "prune" not in text.split("\n", 1)[1].replace("0 to prune", "")  # no prune line without prunes
    assert ("conflict: key 7: source changed 2026-11-26T12:00:00+00:00, remote changed 2026-11-26T12:05:00+00:00; "
            "winner remote: the remote's newer value is kept") in text
    assert SECRET not in text and "old" not in text  # field names, never values
    assert text.endswith(dryrun.NOTHING_WRITTEN)


def test_source_wins_conflicts_say_the_source_is_written_over_the_remote() -> None:
    line = dryrun._conflict({"key": "7", "source_at": None, "remote_at": T2, "winner": "source"})
    assert "source changed unknown" in line and "the source's value is written over the remote's" in line


def test_planning_records_no_origins(tmp_path: Path) -> None:
    sync_plan, guard = planned(tmp_path)
    assert sync_plan.collections[0].creates == 3  # it planned the writes...
    with guard.engine.connect() as conn:  # ...and noted none of their origins: the apply step does
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.origins)).scalar() == 0


REMOTE = RemoteSource.model_validate({
    "name": "eu_to_us", "status": "published", "source_conn_id": "directus_eu", "remote_conn_id": "directus_us",
    "schema": [{"name": "a", "fields": ["title"]}]})


def dry_context(**params: Any) -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id="directus_sync__eu_to_us"), "run_id": "manual__1",
            "params": {"dry_run": True, **params}, "ti": SimpleNamespace(xcom_push=_no_xcom)}


def _no_xcom(key: str, value: Any) -> None:
    raise AssertionError(f"a dry run's filter_schema pushed {key!r}: its one result is what it returns")


def test_filter_schema_of_a_dry_run_records_no_conflict_clears_no_dead_letter_and_drops_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STAGING_URL_ENV, f"file://{tmp_path}/staging")
    context = dry_context()
    folder = run_folder("directus_sync__eu_to_us", "manual__1")
    sync_plan, guard = planned(Path(folder.path))
    engine = guard.engine
    ledger.record_dead_letters(engine, "eu_to_us", "old_run", [Failure("a", "6", "update", "refused")])
    sync_plan.collections[0].resolved_dead_letters = ["6"]  # a real run would clear it now
    monkeypatch.setattr(tables, "engine_for", lambda conn_id=None: engine)
    monkeypatch.setattr(steps, "plan_changes", lambda remote, changes, engine: (sync_plan, guard))

    extracted = Extracted(manifest=ChangeManifest(run_folder=str(folder), window="w", full=False, collections=[]),
                          window=WindowRecord(end=datetime(2026, 11, 28, tzinfo=UTC)))
    result = steps.filter_schema(REMOTE, extracted, context)

    assert result.plan is None, "apply tasks get no plan to write"  # (they skip in a dry run anyway)
    summary = result.dry_run
    assert summary is not None
    assert summary["collections"][0]["conflicts"] == 1 and summary["collections"][0]["dead_letters_resolved"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.conflicts)).scalar() == 0
    assert ledger.open_dead_letters(engine, "eu_to_us") == {"a": {"6"}}
    assert not folder.exists()  # the writing tasks and the cleanup are skipped, so it cleans up itself


def test_a_dry_run_takes_no_lease_skips_writes_and_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def untouchable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run touched the lease or the ledger")

    monkeypatch.setattr(steps.leases, "hold", untouchable)
    monkeypatch.setattr(tables, "engine_for", untouchable)
    context = dry_context()
    with steps.lease_held(REMOTE, context, first=True):
        pass
    with pytest.raises(AirflowSkipException):
        steps.skip_in_dry_run(context)
    steps.skip_in_dry_run({"params": {}})  # a real run goes on
    with pytest.raises(AirflowSkipException, match="no ledger row and no Asset events"):
        outcome.record_run(REMOTE, [None] * 5, context)


def test_a_failed_dry_run_fails_red_without_notifying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcome.notify, "send", lambda *a: pytest.fail("a dry run notified"))
    monkeypatch.setattr(outcome.alerts, "send", lambda *a: pytest.fail("a dry run alerted"))
    failed = Failed(task="filter_schema", error="SchemaMismatch: field a.x is missing")
    with pytest.raises(AirflowFailException, match="dry run of remote 'eu_to_us' failed: filter_schema: Schema"):
        outcome.notify_on_failure(REMOTE, [None, failed.model_dump(mode="json"), None, None, None], dry_context())


def test_an_event_mode_dry_run_plans_in_its_one_task_and_leaves_lease_and_watermark_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def untouchable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an event-mode dry run wrote or took the lease")

    monkeypatch.setattr(steps.leases, "hold", untouchable)
    monkeypatch.setattr(event_task.watermark, "mark_synced", untouchable)
    monkeypatch.setattr(steps, "apply_writes", untouchable)
    extracted = Extracted(manifest=ChangeManifest(run_folder="f", window="w", full=False, collections=[]),
                          window=WindowRecord(end=datetime(2026, 11, 28, tzinfo=UTC)))
    summary = Planned(dry_run={"collections": []})
    monkeypatch.setattr(steps, "extract_changes", lambda remote, context: extracted)
    monkeypatch.setattr(steps, "filter_schema", lambda remote, manifest, context: summary)
    assert event_task.run_sync(REMOTE, dry_context()) == Synced(steps=[extracted, summary])


def test_a_creates_deferred_references_are_not_counted_as_an_update(tmp_path: Path) -> None:
    from directus_sync.engine.plan import CollectionPlan
    from directus_sync.engine.staging import write_jsonl

    folder = ObjectStoragePath(f"file://{tmp_path}")
    write_jsonl(folder / "c.jsonl", [{"id": 2, "title": "child"}])
    write_jsonl(folder / "u.jsonl", [{"key": 2, "changes": {"parent": 1}, "item": {}, "deferred": True},
                                     {"key": 3, "changes": {"title": "x"}, "item": {}}])
    write_jsonl(folder / "d.jsonl", [])
    plan = CollectionPlan(collection="pages", pk="id", fields=["id"], creates=1, updates=2,
                          creates_path=str(folder / "c.jsonl"), updates_path=str(folder / "u.jsonl"),
                          deletes_path=str(folder / "d.jsonl"))
    summary = dryrun.summarize(SyncPlan(run_folder=str(folder), window="w", collections=[plan]), [],
                               ConflictPolicy.LAST_WRITER_WINS)
    [pages] = summary["collections"]
    assert (pages["creates"], pages["updates"], pages["deferred_references"]) == (1, 1, 1)
    assert pages["update_keys"] == [{"key": "3", "fields": ["title"]}] and pages["updated_fields"] == {"title": 1}
    assert any("1 of the created items get their deferred references" in line for line in dryrun.render(summary))
