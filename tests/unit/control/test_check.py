"""The pre-flight check: fields the API cannot carry, and source collections without activity tracking."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from directus_sync.config import RemoteSource
from directus_sync.control import check
from directus_sync.directus.provision import CRUD_ACTIONS, SYSTEM_PERMISSIONS

ARTICLES = [
    {"field": "id", "type": "integer", "schema": {"is_primary_key": True}, "meta": {}},
    {"field": "title", "type": "string", "schema": {"is_primary_key": False}, "meta": {}},
    {"field": "token", "type": "string", "schema": {"is_primary_key": False}, "meta": {"special": ["conceal"]}},
    {"field": "author", "type": "integer", "schema": {"foreign_key_table": "authors"}, "meta": {"special": ["m2o"]}},
]


class FakeHook:
    """One instance as the check sees it: everything allowed (the activity read filtered, as on a licensed
    instance provisioned with a schema), ``articles`` as above."""

    untracked: ClassVar[set[str]] = set()
    activity_access: ClassVar[str] = "partial"
    licence_source: ClassVar[str | None] = "env"
    withheld: ClassVar[set[tuple[str, str]]] = set()
    # The /relations rows each instance shows, by connection id (none by default).
    relation_rows: ClassVar[dict[str, list[dict[str, Any]]]] = {}

    def __init__(self, directus_conn_id: str, **_: Any) -> None:
        self.directus_conn_id = directus_conn_id

    def current_user_id(self) -> str:
        return "sync-user"

    def request(self, method: str, path: str, **_: Any) -> Any:
        if (method, path) == ("GET", "/server/info"):
            return {"license": {"source": self.licence_source, "entitlements": {}}}
        assert (method, path) == ("GET", "/permissions/me")
        allowed = ({(c, a) for c in ("articles",) for a in CRUD_ACTIONS} | set(SYSTEM_PERMISSIONS)) - self.withheld
        access: dict[str, dict[str, Any]] = {}
        for collection, action in allowed:
            access.setdefault(collection, {})[action] = {"access": "full"}
        access["directus_activity"]["read"] = {"access": self.activity_access}
        return access

    def fields(self, collection: str) -> list[dict[str, Any]]:
        return ARTICLES

    def activity_tracked(self, collection: str) -> bool:
        return collection not in self.untracked

    def relations(self) -> list[dict[str, Any]]:
        return self.relation_rows.get(self.directus_conn_id, [])


@pytest.fixture(autouse=True)
def fake_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "DirectusHook", FakeHook)
    monkeypatch.setattr(FakeHook, "untracked", set())
    monkeypatch.setattr(FakeHook, "activity_access", "partial")
    monkeypatch.setattr(FakeHook, "licence_source", "env")
    monkeypatch.setattr(FakeHook, "withheld", set())
    monkeypatch.setattr(FakeHook, "relation_rows", {})
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


def remote(fields: tuple[str, ...] = ("title",), **row: Any) -> RemoteSource:
    return RemoteSource(name="eu_to_us", source_conn_id="directus_eu", remote_conn_id="directus_us",
                        schema=[{"name": "articles", "fields": list(fields)}], **row)


def test_a_ready_remote_has_no_problems() -> None:
    assert check.check_remote(remote()) == []


def test_a_concealed_field_is_a_problem_on_both_instances_and_the_fix_is_to_unlist_it() -> None:
    problems = check.check_remote(remote(("title", "token")))
    assert [(p.where, p.fix) for p in problems] == [("directus_eu", "remove the field from the schema"),
                                                    ("directus_us", "remove the field from the schema")]
    assert "field articles.token on 'directus_eu' is conceal: Directus returns '**********'" in problems[0].problem


def test_a_source_collection_without_activity_tracking_is_a_problem_without_a_reconcile_schedule() -> None:
    FakeHook.untracked = {"articles"}
    problems = check.check_remote(remote())
    assert len(problems) == 1 and not problems[0].note
    assert problems[0].where == "source directus_eu"
    assert problems[0].problem.startswith("activity tracking is off for articles on the source 'directus_eu'")
    assert problems[0].fix == "set the collection's Activity tracking to 'all' or set reconcile_schedule"


def test_with_a_reconcile_schedule_an_untracked_collection_is_only_a_note() -> None:
    FakeHook.untracked = {"articles"}
    problems = check.check_remote(remote(reconcile_schedule="@hourly"))
    assert len(problems) == 1 and problems[0].note
    assert "the reconcile DAG (@hourly) syncs it" in problems[0].fix


def test_local_staging_under_celery_is_a_problem_unless_the_whole_run_is_one_task(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("DIRECTUS_SYNC_STAGING_URL", f"file://{tmp_path}")
    monkeypatch.delenv("DIRECTUS_SYNC_STAGING_SHARED", raising=False)
    problems = check.check_remote(remote())
    assert [p.where for p in problems] == ["staging"]
    assert "CeleryExecutor" in problems[0].problem and "DIRECTUS_SYNC_STAGING_URL" in problems[0].fix
    assert check.check_remote(remote(trigger="events")) == []  # extraction to writes in one task
    assert [p.where for p in check.check_remote(remote(trigger="events", reconcile_schedule="@daily"))] == ["staging"]


def test_on_the_core_licence_the_check_notes_that_the_sync_user_reads_every_collections_activity() -> None:
    FakeHook.activity_access, FakeHook.licence_source = "full", None
    problems = check.check_remote(remote())
    assert [(p.where, p.note) for p in problems] == [("source directus_eu", True), ("remote directus_us", True)]
    assert problems[0].problem == check.UNENFORCED_NOTE
    assert problems[0].problem.startswith("this instance's licence does not enforce permission filters or field "
                                          "limits: the sync user can read the activity of every collection, with "
                                          "IP addresses and user agents")
    assert "licence with custom permission rules" in problems[0].fix


def test_a_licensed_instance_with_an_unfiltered_activity_read_is_told_to_provision_again() -> None:
    FakeHook.activity_access = "full"
    problems = check.check_remote(remote())
    assert all(p.note for p in problems) and len(problems) == 2
    assert "every collection" in problems[0].problem and "provision --schema" in problems[0].fix


def test_a_sync_user_provisioned_before_relations_were_read_is_told_to_provision_again() -> None:
    FakeHook.withheld = {("directus_relations", "read")}
    problems = check.check_remote(remote())
    assert [(p.where, p.problem, p.fix) for p in problems] == [
        ("source directus_eu", "the sync user may not read directus_relations", check.PROVISION_FIX),
        ("remote directus_us", "the sync user may not read directus_relations", check.PROVISION_FIX)]


def test_a_listed_field_related_differently_on_the_two_instances_is_a_problem_naming_both() -> None:
    def author_to(related: str) -> list[dict[str, Any]]:
        return [{"collection": "articles", "field": "author", "related_collection": related, "meta": {}},
                {"collection": "articles", "field": "editor", "related_collection": "elsewhere", "meta": {}}]

    FakeHook.relation_rows = {"directus_eu": author_to("authors"), "directus_us": author_to("people")}
    [problem] = check.check_remote(remote(fields=("title", "author")))
    assert problem.problem == "articles.author -> authors on 'directus_eu' but -> people on 'directus_us'"
    assert check.check_remote(remote(fields=("title",))) == []  # editor and author are not listed


def test_an_unknown_source_connection_is_a_problem_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def undefined(name: str) -> Any:
        original = getattr(FakeHook, name)

        def call(self: FakeHook, *args: Any, **kwargs: Any) -> Any:
            if self.directus_conn_id == "directus_eu":
                raise RuntimeError("The conn_id `directus_eu` isn't defined")  # as Airflow says it
            return original(self, *args, **kwargs)

        return call

    for name in ("current_user_id", "request", "fields"):
        monkeypatch.setattr(FakeHook, name, undefined(name))
    problems = check.check_remote(remote(fields=("title",)))
    assert [p.problem for p in problems] == [
        "connection 'directus_eu' cannot be used: The conn_id `directus_eu` isn't defined"]


def test_a_listed_file_field_needs_the_file_grants_and_pruning_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    image = {"field": "image", "type": "uuid", "schema": {"foreign_key_table": "directus_files"},
             "meta": {"special": ["file"]}}
    monkeypatch.setattr(FakeHook, "fields", lambda self, collection: [*ARTICLES, image])
    problems = check.check_remote(remote(fields=("title", "image")))
    missing = {(p.where.split()[0], p.problem.split(", which")[0].removeprefix("the sync user may not "))
               for p in problems}
    assert ("source", "read directus_files") in missing and ("remote", "create directus_folders") in missing
    assert not any("delete" in m for _, m in missing)  # no pruning asked
    pruning = check.check_remote(remote(fields=("title", "image"), prune_files=True))
    assert any(p.where.startswith("remote") and "delete directus_files" in p.problem for p in pruning)
    assert "--prune-files" in pruning[0].fix
    assert check.check_remote(remote(fields=("title",), prune_files=True)) == []  # no file field listed
