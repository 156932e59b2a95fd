"""Operating it: the run ledger and `directus-sync runs`, Asset events, deadline alerts and the status page.

The last test runs a real `airflow standalone` (scheduler, triggerer, API server with the plugin) and looks
at the status page in headless Chromium (Debian's package, driven by Playwright). The last one runs a real
API server with FAB's auth manager, to check that each user sees only the remotes their role may read.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.devserver import DirectusInstance, free_port
from devtools.localairflow import AIRFLOW_BIN, stop_process_group
from directus_sync.state import ledger
from tests.webhook import Webhook

from .conftest import TABLE_DB
from .harness import ARTIFACTS, Airflow, conn_id, create_collection, run_cli
from .test_sync_dags import add_remote, run_fails, run_ok, seed

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def test_every_run_is_in_the_ledger_and_the_runs_command_shows_it_with_the_lag(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, webhook: Webhook) -> None:
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    keys = seed(a, collection, 6)
    name = f"ledger_{collection}"
    airflow.connections["ops_webhook"] = {"conn_type": "http", "host": webhook.url}
    dag_id = add_remote(airflow, name, a, b, collection,
                        alerts=[{"type": "http", "conn_id": "ops_webhook", "endpoint": "/alerts"}])
    run_ok(airflow, dag_id)
    a.api("PATCH", f"/items/{collection}", json={"keys": keys[:2], "data": {"title": "edited"}})
    a.api("DELETE", f"/items/{collection}", json=keys[-1:])
    run_ok(airflow, dag_id)

    second, first = ledger.group_runs(ledger.recent_runs(airflow.engine(), name))
    assert [(r["collection"], r["created"], r["status"], r["full_copy"]) for r in first] == [
        (collection, 6, "success", True)]
    assert [(r["updated"], r["deleted"], r["created"], r["status"]) for r in second] == [(2, 1, 0, "success")]
    assert second[0]["window_start"] is not None and second[0]["window_end"] > first[0]["window_end"]
    assert second[0]["duration_seconds"] > 0

    b.api("DELETE", f"/fields/{collection}/views")  # the next run cannot sync: a listed field is gone
    a.api("PATCH", f"/items/{collection}/{keys[0]}", json={"title": "again"})
    run_fails(airflow, dag_id)
    latest = ledger.recent_runs(airflow.engine(), name, limit=1)
    assert [(r["status"], r["created"] + r["updated"] + r["deleted"]) for r in latest] == [("failed", 0)]
    assert "views" in (latest[0]["error"] or "")
    [alert] = webhook.received  # the failed run, through the remote's alert channel
    assert alert["event"] == "run_failed" and alert["remote"] == name and "views" in alert["message"]

    shown = run_cli(airflow, "runs", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(f" {collection} ") == 3  # one line per run
    assert shown.stdout.count("success") == 2 and shown.stdout.count("failed") == 1
    assert f"{name}: lag " in shown.stdout
    unknown = run_cli(airflow, "runs", "no_such_remote")
    assert unknown.returncode == 2 and "no remote named 'no_such_remote'" in unknown.stderr


def wait_for(what: str, check: Callable[[], Any], timeout: float = 300, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_under_a_real_scheduler_a_late_run_alerts_assets_are_emitted_and_the_status_page_shows_the_run(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, webhook: Webhook,
        tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "this test needs Debian's chromium: apt-get install chromium (.ci/run does)"
    a, b = instances["a"], instances["b"]
    create_collection(a, collection)
    create_collection(b, collection)
    seed(a, collection, 8)
    name = f"ops_{collection}"
    # A 1-second deadline: every run is late, so the deadline callback must fire in the triggerer.
    dag_id = add_remote(airflow, name, a, b, collection, schedule="@daily", deadline="1 second",
                        alerts=[{"type": "http", "conn_id": "ops_webhook", "endpoint": "/alerts"}])
    standalone = Airflow(home=tmp_path / "airflow", table_db=TABLE_DB)
    for instance in (a, b):
        standalone.add_instance(instance)
    standalone.connections["ops_webhook"] = {"conn_type": "http", "host": webhook.url}
    standalone.migrate()

    with standalone.standalone(port=free_port()) as server:
        wait_for(f"the dag-processor to parse {dag_id}", lambda: _dag_exists(server, dag_id))
        server.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run_id = server.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]
        state = wait_for("the run to finish", lambda: _finished(server, dag_id, run_id))
        assert state == "success", server.log_path.read_text()[-5000:]
        assert len(b.api("GET", f"/items/{collection}", params={"limit": -1})) == 8

        # Unpausing also queued the latest scheduled run; this test follows the manual one.
        late = wait_for("the deadline alert", lambda: [m for m in webhook.received if m["run_id"] == run_id],
                        timeout=180)
        assert late[0]["event"] == "deadline_missed" and late[0]["remote"] == name
        assert "had not finished 1 second later" in late[0]["message"]

        events = server.api("GET", "/api/v2/assets/events", params={"source_dag_id": dag_id})["asset_events"]
        assert [(e["uri"], e["extra"]["created"] + e["extra"]["skipped"]) for e in events
                if e["source_run_id"] == run_id] == [(f"directus://{conn_id(b)}/{collection}", 8)]

        plugins = server.api("GET", "/api/v2/plugins")["plugins"]
        views = [v for p in plugins if p["name"] == "directus_sync" for v in p["external_views"]]
        assert views and views[0]["href"] == "/directus-sync/"

        screenshot = ARTIFACTS / "status-page.png"
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_context(viewport={"width": 1400, "height": 700}).new_page()
            denied = page.goto(f"{server.url}/directus-sync/")
            assert denied is not None and denied.status == 401  # only for users logged in to Airflow
            page.context.add_cookies([{"name": "_token", "value": server.token(), "url": server.url}])
            page.goto(f"{server.url}/directus-sync/")
            row = page.locator(f'tr[data-remote="{name}"]')
            text = row.inner_text()
            assert "published" in text and "success" in text and "created" in text, text
            assert row.locator("svg.chart rect").count() >= 1
            assert row.locator(f'a[href="/dags/{dag_id}"]').count() == 1
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        assert screenshot.stat().st_size > 10_000


def _dag_exists(server: Any, dag_id: str) -> bool:
    dags = server.api("GET", "/api/v2/dags", params={"dag_id_pattern": dag_id})["dags"]
    return any(d["dag_id"] == dag_id for d in dags)


def _finished(server: Any, dag_id: str, run_id: str) -> str | None:
    state: str = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
    return state if state in ("success", "failed") else None


FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
REGISTER_DAG_RESOURCE = """
import sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:  # what `airflow sync-perm --include-dags` does for a parsed DAG
    appbuilder.sm.create_permission("can_read", "DAG:" + sys.argv[1])
"""


def test_the_status_page_shows_each_user_only_the_remotes_their_fab_role_may_read(
        instances: dict[str, DirectusInstance], airflow: Airflow, collection: str, tmp_path: Path) -> None:
    """A real API server whose FAB auth manager decides: a role that may read one remote's DAG only."""
    import requests

    a, b = instances["a"], instances["b"]
    one = add_remote(airflow, f"one_{collection}", a, b, collection)
    add_remote(airflow, f"two_{collection}", a, b, collection)  # no runs needed: rows are enough
    fab = Airflow(home=tmp_path / "fab", table_db=TABLE_DB)
    fab.extra_env.update({"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
                          "AIRFLOW__API_AUTH__JWT_SECRET": "status-page-test-secret"})
    fab.migrate()
    steps = [
        ("roles", "create", "OneRemoteReader"),
        ("users", "create", "-u", "admin", "-p", "admin-pw", "-r", "Admin", "-f", "A", "-l", "D",
         "-e", "admin@example.com"),
        ("users", "create", "-u", "reader", "-p", "reader-pw", "-r", "OneRemoteReader", "-f", "R", "-l", "D",
         "-e", "reader@example.com"),
    ]
    for step in steps:
        result = fab.run(*step, timeout=300)
        assert result.returncode == 0, (step, result.stdout[-2000:], result.stderr[-3000:])
    registered = subprocess.run([sys.executable, "-c", REGISTER_DAG_RESOURCE, one], env=fab.env(),
                                capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    added = fab.run("roles", "add-perms", "OneRemoteReader", "-r", f"DAG:{one}", "-a", "can_read", timeout=300)
    assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-3000:]

    with api_server(fab, free_port()) as url:
        def token(user: str, password: str) -> str:
            response = requests.post(f"{url}/auth/token", json={"username": user, "password": password},
                                     timeout=60)
            assert response.status_code == 201, response.text
            return str(response.json()["access_token"])

        def shown(jwt: str) -> tuple[list[str], str]:
            remotes = requests.get(f"{url}/directus-sync/api/remotes", timeout=60,
                                   headers={"Authorization": f"Bearer {jwt}"})
            page = requests.get(f"{url}/directus-sync/", cookies={"_token": jwt}, timeout=60)  # as the UI
            assert remotes.status_code == 200 and page.status_code == 200, (remotes.text, page.text)
            return [r["name"] for r in remotes.json() if r["name"].endswith(collection)], page.text

        assert requests.get(f"{url}/directus-sync/api/remotes?user=admin", timeout=60).status_code == 401
        names, page = shown(token("reader", "reader-pw"))
        assert names == [f"one_{collection}"]
        assert f'data-remote="one_{collection}"' in page and f"two_{collection}" not in page
        names, page = shown(token("admin", "admin-pw"))
        assert names == [f"one_{collection}", f"two_{collection}"]
        assert f'data-remote="one_{collection}"' in page and f'data-remote="two_{collection}"' in page


@contextlib.contextmanager
def api_server(home: Airflow, port: int, timeout: float = 300) -> Iterator[str]:
    """``airflow api-server`` alone (one worker) for ``home``, until exit; yields its URL."""
    url = f"http://localhost:{port}"
    log_path = home.home / "api-server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([AIRFLOW_BIN, "api-server", "-p", str(port), "-w", "1"],
                                   env={**home.env(), "AIRFLOW__API__BASE_URL": url}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("the API server", lambda: _answers(process, f"{url}/api/v2/version", log_path), timeout=timeout,
                 every=1)
        yield url
    finally:
        stop_process_group(process)


def _answers(process: subprocess.Popen[bytes], url: str, log_path: Path) -> bool:
    import requests

    assert process.poll() is None, log_path.read_text()[-5000:]
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False
