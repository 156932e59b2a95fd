"""Alerts beyond Directus notifications: late runs (Deadline Alerts) and failed runs, through notifiers.

A remote's ``alerts`` column lists channels (see :class:`~directus_sync.config.AlertChannel`); a remote
without any uses the global ones, the JSON of the Airflow Variable ``directus_sync_alerts``. Each channel
becomes one of the providers' notifiers (HTTP webhook, SMTP, Slack webhook), built when the alert is sent,
so the DAG files never read Variables at parse time.

:func:`on_deadline_missed` is the Deadline Alert callback: Airflow runs it in the triggerer, so it is
async, importable from the installed package, and takes only plain, secret-free keyword arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from airflow.sdk import BaseNotifier

from directus_sync.config import AlertChannel

log = logging.getLogger(__name__)

GLOBAL_CHANNELS_VARIABLE = "directus_sync_alerts"


@dataclass(frozen=True)
class Alert:
    """One alert about one run of one remote; ``event`` is ``deadline_missed`` or ``run_failed``."""

    event: str
    remote: str
    dag_id: str
    run_id: str | None
    subject: str
    message: str

    def payload(self) -> dict[str, Any]:
        return {"source": "directus-sync", **asdict(self)}


class AlertChannelError(ValueError):
    """An alert channel cannot be used as configured."""


def parse_channels(value: Any) -> tuple[AlertChannel, ...]:
    """Channels from JSON text or already-decoded data: one channel object or a list of them."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(AlertChannel.model_validate(item) for item in items)


def global_channels() -> tuple[AlertChannel, ...]:
    """The channels of the Airflow Variable ``directus_sync_alerts``; none when it is not set."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(GLOBAL_CHANNELS_VARIABLE, default=None)
    except Exception as exc:  # the Variable store is down or unreachable: the alert must still go out
        log.warning("Cannot read Variable %s: %s", GLOBAL_CHANNELS_VARIABLE, exc)
        return ()
    try:
        return parse_channels(value)
    except ValueError as exc:
        log.error("Variable %s is not a valid list of alert channels: %s", GLOBAL_CHANNELS_VARIABLE, exc)
        return ()


def notifier_for(channel: AlertChannel, alert: Alert) -> BaseNotifier:
    """The provider notifier that delivers ``alert`` through ``channel``."""
    if channel.type == "http":
        from airflow.providers.http.notifications.http import HttpNotifier

        return HttpNotifier(http_conn_id=str(channel.conn_id), endpoint=channel.endpoint, method="POST",
                            json=alert.payload(), headers={"Content-Type": "application/json"})
    if channel.type == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        html = "<pre>" + alert.message.replace("&", "&amp;").replace("<", "&lt;") + "</pre>"
        return SmtpNotifier(to=list(channel.to), subject=alert.subject, html_content=html,
                            smtp_conn_id=channel.conn_id or "smtp_default")
    try:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    except ImportError as exc:
        raise AlertChannelError("alert channel slack_webhook needs apache-airflow-providers-slack installed "
                                "where tasks and the triggerer run") from exc
    return SlackWebhookNotifier(slack_webhook_conn_id=channel.conn_id, text=f"*{alert.subject}*\n{alert.message}")


def send(alert: Alert, channels: Sequence[AlertChannel], context: Mapping[str, Any]) -> int:
    """Deliver ``alert`` through every channel; a failing channel is logged and does not stop the others."""
    delivered = 0
    for channel in channels:
        try:
            notifier_for(channel, alert).notify(dict(context))  # type: ignore[arg-type]
            delivered += 1
        except Exception:
            log.exception("Alert channel %s failed for remote %s", channel.type, alert.remote)
    return delivered


async def asend(alert: Alert, channels: Sequence[AlertChannel], context: Mapping[str, Any]) -> int:
    """:func:`send` for the triggerer's event loop: each notifier's own async path."""
    delivered = 0
    for channel in channels:
        try:
            await notifier_for(channel, alert).async_notify(dict(context))  # type: ignore[arg-type]
            delivered += 1
        except Exception:
            log.exception("Alert channel %s failed for remote %s", channel.type, alert.remote)
    return delivered


def deadline_alert(remote: str, dag_id: str, deadline: str, context: Mapping[str, Any] | None) -> Alert:
    dag_run = (context or {}).get("dag_run") or {}
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id")
    queued = dag_run.get("queued_at") or "an unknown time"
    subject = f"directus-sync: sync to remote '{remote}' is late"
    message = (f"Run {run_id or '(unknown)'} of {dag_id} was queued at {queued} and had not finished "
               f"{deadline} later (state: {dag_run.get('state', 'unknown')}).\n"
               f"The remote is falling behind its source; check the run in Airflow.")
    return Alert("deadline_missed", remote, dag_id, run_id, subject, message)


async def on_deadline_missed(
    remote: str,
    dag_id: str,
    deadline: str,
    source_conn_id: str,
    notify_users: Sequence[str] = (),
    alerts: Sequence[Mapping[str, Any]] = (),
    context: Mapping[str, Any] | None = None,
) -> int:
    """Deadline Alert callback: tell the remote's ``notify_users`` (on the source) and its alert channels.

    Returns how many deliveries succeeded. Sync work (Directus calls, the Variable) runs in a thread:
    the triggerer's event loop must never block.
    """
    from directus_sync.directus.hook import DirectusHook

    alert = deadline_alert(remote, dag_id, deadline, context)
    log.warning("%s: %s", alert.subject, alert.message)
    channels = parse_channels(list(alerts)) or await asyncio.to_thread(global_channels)
    delivered = await asend(alert, channels, context or {})
    if notify_users:
        try:
            hook = DirectusHook(directus_conn_id=source_conn_id)
            await asyncio.to_thread(hook.notify, notify_users, alert.subject, alert.message)
            delivered += len(notify_users)
        except Exception:
            log.exception("Could not notify users of remote %s on %s", remote, source_conn_id)
    return delivered
