"""The failure notification names the remote, the run, the errors and the keys involved."""

from __future__ import annotations

from directus_sync.directus.notify import MAX_KEYS_LISTED, FailureReport


def test_the_message_names_remote_run_error_and_keys() -> None:
    keys = [str(n) for n in range(MAX_KEYS_LISTED)]
    report = FailureReport(remote="eu_to_us", dag_id="directus_sync__eu_to_us", run_id="manual__1",
                           errors={"apply_creates": "DirectusError: boom"},
                           keys={"articles": keys}, counts={"articles": 25})
    assert report.subject == "directus-sync: sync to remote 'eu_to_us' failed"
    message = report.message
    assert "`directus_sync__eu_to_us` / `manual__1`" in message
    assert "**apply_creates**: DirectusError: boom" in message
    assert f"collection `articles`: 25 changes pending (keys {', '.join(keys)} and 5 more)" in message


def test_a_run_without_recorded_errors_points_to_the_logs() -> None:
    report = FailureReport(remote="r", dag_id="d", run_id="x", errors={})
    assert "see the task logs" in report.message
