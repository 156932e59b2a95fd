"""Alert channels: validated as data, delivered through the providers' notifiers to a real HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from directus_sync.airflow import alerts
from directus_sync.config import AlertChannel
from tests.webhook import Webhook


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_OPS_WEBHOOK", json.dumps({"conn_type": "http", "host": hook.url}))
    yield hook
    hook.close()


def test_channels_are_checked_when_the_row_is_read() -> None:
    assert alerts.parse_channels('[{"type": "smtp", "to": ["ops@example.com"]}]')[0].to == ("ops@example.com",)
    assert alerts.parse_channels({"type": "http", "conn_id": "hook"})[0].conn_id == "hook"
    with pytest.raises(ValidationError, match="needs conn_id"):
        AlertChannel.model_validate({"type": "http"})
    with pytest.raises(ValidationError, match="needs to"):
        AlertChannel.model_validate({"type": "smtp"})


def test_a_failure_alert_is_posted_as_json_through_the_http_notifier(webhook: Webhook) -> None:
    alert = alerts.Alert("run_failed", "eu_to_us", "directus_sync__eu_to_us", "manual__1", "subject", "body")
    channel = AlertChannel(type="http", conn_id="ops_webhook", endpoint="/hooks/sync")
    assert alerts.send(alert, [channel], {}) == 1
    assert webhook.received == [{"source": "directus-sync", "event": "run_failed", "remote": "eu_to_us",
                                 "dag_id": "directus_sync__eu_to_us", "run_id": "manual__1",
                                 "subject": "subject", "message": "body"}]


def test_a_broken_channel_does_not_stop_the_others(webhook: Webhook) -> None:
    alert = alerts.Alert("run_failed", "r", "d", None, "s", "m")
    channels = [AlertChannel(type="http", conn_id="undefined_connection"),
                AlertChannel(type="http", conn_id="ops_webhook")]
    assert alerts.send(alert, channels, {}) == 1
    assert len(webhook.received) == 1


def test_the_deadline_callback_reports_the_late_run_through_the_remote_channels(webhook: Webhook) -> None:
    context = {"dag_run": {"dag_run_id": "scheduled__2026-11-26T12:00:00+00:00", "state": "running",
                           "queued_at": "2026-11-26T12:05:00Z"}}
    delivered = asyncio.run(alerts.on_deadline_missed(
        remote="eu_to_us", dag_id="directus_sync__eu_to_us", deadline="15 minutes", source_conn_id="eu",
        alerts=[{"type": "http", "conn_id": "ops_webhook"}], context=context))
    assert delivered == 1
    [payload] = webhook.received
    assert payload["event"] == "deadline_missed"
    assert payload["run_id"] == "scheduled__2026-11-26T12:00:00+00:00"
    assert "had not finished 15 minutes later" in payload["message"]


def test_remotes_without_channels_use_the_global_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_DIRECTUS_SYNC_ALERTS", '[{"type": "smtp", "to": ["ops@example.com"]}]')
    assert alerts.global_channels() == (AlertChannel(type="smtp", to=("ops@example.com",)),)
    monkeypatch.setenv("AIRFLOW_VAR_DIRECTUS_SYNC_ALERTS", '{"type": "pager"}')
    assert alerts.global_channels() == ()  # an invalid Variable is logged, not fatal to the alert
