"""The directus-sync command against real Directus instances and a real remote-sources table."""

from __future__ import annotations

import json

from devtools.devserver import DirectusInstance

from .harness import Airflow, conn_id, create_collection, run_cli

cli = run_cli


def test_provision_creates_a_working_sync_user_and_prints_its_connection(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    c = instances["c"]
    c.api("POST", "/collections", json={"collection": collection, "meta": {}, "schema": {}, "fields": [
        {"field": "id", "type": "integer", "schema": {"is_primary_key": True, "has_auto_increment": True}}]})
    first = cli(airflow, "provision", "--url", c.url, "--collection", collection, "--conn-id", "directus_new",
                DIRECTUS_ADMIN_TOKEN=c.admin_token)
    assert first.returncode == 0, first.stderr
    assert c.admin_token not in first.stdout + first.stderr
    line = next(ln for ln in first.stdout.splitlines() if "AIRFLOW_CONN_DIRECTUS_NEW='{" in ln)
    connection = json.loads(line.split("=", 1)[1].strip("'"))
    assert connection["conn_type"] == "http" and connection["host"] == c.url
    assert c.api("GET", "/users/me", token=connection["password"])["id"]  # the token works
    assert c.api("GET", f"/items/{collection}", token=connection["password"]) == []  # and reads the collection
    assert "AIRFLOW_CONN_DIRECTUS_NEW='http://:" in first.stdout

    again = cli(airflow, "provision", "--url", c.url, "--collection", collection, "--token", "sync-token-c",
                DIRECTUS_ADMIN_TOKEN=c.admin_token)
    assert again.returncode == 0, again.stderr  # idempotent; and the harness's token is back in place


def test_provision_reports_a_bad_admin_token_without_a_traceback(
        instances: dict[str, DirectusInstance], airflow: Airflow) -> None:
    result = cli(airflow, "provision", "--url", instances["c"].url, "--collection", "x",
                 DIRECTUS_ADMIN_TOKEN="wrong")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "failed (401)" in result.stderr


def test_db_and_remote_commands_manage_validated_rows(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    assert cli(airflow, "db", "init").returncode == 0
    assert cli(airflow, "db", "upgrade").returncode == 0
    name = f"cli_{collection}"
    bad = cli(airflow, "remote", "add", name, "--source", conn_id(a), "--remote", conn_id(b),
              "--schema", '[{"name": "x",}]')
    assert bad.returncode == 2 and "--schema is not valid JSON" in bad.stderr
    missing_fields = cli(airflow, "remote", "add", name, "--source", conn_id(a), "--remote", conn_id(b),
                         "--schema", '[{"name": "x"}]')
    assert missing_fields.returncode == 2 and "schema[0].fields: Field required" in missing_fields.stderr

    schema = json.dumps([{"name": collection, "fields": ["title"]}])
    unknown = cli(airflow, "remote", "add", name, "--source", conn_id(a), "--remote", conn_id(b), "--schema", schema,
                  "--set", "colour=blue")
    assert unknown.returncode == 2 and "expected COLUMN=VALUE" in unknown.stderr
    added = cli(airflow, "remote", "add", name, "--source", conn_id(a), "--remote", conn_id(b), "--schema", schema,
                "--set", "batch_size=250", "--set", "conflict_policy=source_wins")
    assert added.returncode == 0, added.stderr
    assert f"directus_sync__{name}" in added.stdout
    assert cli(airflow, "remote", "add", name, "--source", conn_id(a), "--remote", conn_id(b),
               "--schema", schema).returncode == 2
    assert name in cli(airflow, "remote", "list").stdout
    assert cli(airflow, "remote", "disable", name).returncode == 0
    shown = json.loads(cli(airflow, "remote", "show", name).stdout.split("valid;")[0])
    assert (shown["status"], shown["batch_size"], shown["conflict_policy"]) == ("draft", 250, "source_wins")
    assert cli(airflow, "remote", "enable", name).returncode == 0
    assert cli(airflow, "remote", "remove", name).returncode == 0
    gone = cli(airflow, "remote", "show", name)
    assert gone.returncode == 2 and f"no remote named {name!r}" in gone.stderr


def test_check_passes_a_ready_remote_and_lists_what_to_fix_otherwise(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection, extra_fields=("subtitle",))
    create_collection(b, collection)
    ready = f"ready_{collection}"
    airflow.add_remote(name=ready, source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                       schema=[{"name": collection, "fields": ["title", "views"]}])
    result = cli(airflow, "check", ready)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is ready" in result.stdout

    broken = f"unready_{collection}"
    airflow.connections["directus_badtoken"] = {"conn_type": "http", "host": b.url, "password": "nope"}
    airflow.add_remote(name=broken, source_conn_id=conn_id(a), remote_conn_id=conn_id(b),
                       schema=[{"name": collection, "fields": ["title", "subtitle"]}])
    result = cli(airflow, "check", broken)
    assert result.returncode == 1
    assert f"field {collection}.subtitle is missing on 'directus_b'" in result.stdout

    token = f"token_{collection}"
    airflow.add_remote(name=token, source_conn_id=conn_id(a), remote_conn_id="directus_badtoken",
                       schema=[{"name": collection, "fields": ["title"]}])
    result = cli(airflow, "check", token)
    assert result.returncode == 1
    assert "the token is rejected (401)" in result.stdout
    assert "Traceback" not in result.stderr

    unknown = f"unknown_{collection}"
    airflow.add_remote(name=unknown, source_conn_id="directus_nowhere", remote_conn_id=conn_id(b),
                       schema=[{"name": collection, "fields": ["title"]}])
    result = cli(airflow, "check", unknown)
    assert result.returncode == 1
    assert "connection 'directus_nowhere' cannot be used" in result.stdout
