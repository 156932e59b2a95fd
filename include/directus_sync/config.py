"""Configuration models: one validated row of the remote-sources table.

The table holds data, not code; every row is validated here once, and the DAG factory only ever sees a
:class:`RemoteSource` or a :class:`BrokenRemote` that explains which field of which row is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, Literal

import pendulum
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The most bytes of items one batch holds, read or written (see README, "Memory").
BATCH_BYTES_ENV = "DIRECTUS_SYNC_BATCH_BYTES"
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
DAG_ID_PREFIX = "directus_sync__"
RECONCILE_SUFFIX = "__reconcile"
DEFAULT_SCHEDULE = "*/5 * * * *"
DEFAULT_START_DATE = datetime(2024, 1, 1, tzinfo=pendulum.UTC)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,62}$"
# A collection or field name as Directus stores it: a database identifier (letters, digits, "_", "-"; at most
# 64 characters). Anything else (a "/", "..", "?", a space) could make a request path point elsewhere.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
DURATION_PATTERN = r"(?P<amount>\d+(\.\d+)?)\s*(?P<unit>s|secs?|seconds?|m|mins?|minutes?|h|hours?)"
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours"}
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


class Status(StrEnum):
    """Only published rows become DAGs, as in the original extension."""

    PUBLISHED = "published"
    DRAFT = "draft"
    ARCHIVED = "archived"


class ConflictPolicy(StrEnum):
    """Who wins when the same item changed on both sides since the last sync."""

    LAST_WRITER_WINS = "last_writer_wins"
    SOURCE_WINS = "source_wins"


class AlertChannel(BaseModel):
    """Where late-run and failure alerts go besides Directus notifications: one of the providers' notifiers.

    ``{"type": "http", "conn_id": "ops_webhook", "endpoint": "/hooks/directus-sync"}`` posts JSON to an
    HTTP connection; ``{"type": "smtp", "to": ["ops@example.com"]}`` mails through ``smtp_default`` (or
    ``conn_id``); ``{"type": "slack_webhook", "conn_id": "slack_ops"}`` needs the Slack provider.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http", "smtp", "slack_webhook"]
    conn_id: str | None = None
    endpoint: str = ""
    to: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> AlertChannel:
        if self.type in ("http", "slack_webhook") and not self.conn_id:
            raise ValueError(f"a {self.type} alert channel needs conn_id (an Airflow connection)")
        if self.type == "smtp" and not self.to:
            raise ValueError("an smtp alert channel needs to: a list of addresses")
        return self


class TriggerMode(StrEnum):
    """What starts a remote's runs: its cron schedule, changes on the source, or both."""

    SCHEDULE = "schedule"
    EVENTS = "events"
    BOTH = "both"


def _identifier(kind: str, name: str) -> None:
    if not IDENTIFIER.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} is not a Directus identifier: use letters, digits, '_' and '-', "
                         "starting with a letter or '_', at most 64 characters")


class CollectionSchema(BaseModel):
    """One synced collection and the fields to carry; the primary key is always carried.

    Accepts the original extension's ``name`` and its validator's ``collection`` for the collection name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(validation_alias=AliasChoices("name", "collection"), min_length=1)
    fields: tuple[str, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _not_a_system_collection(cls, name: str) -> str:
        _identifier("collection", name)
        if name.startswith("directus_"):
            raise ValueError(f"system collection {name!r} cannot be synced")
        return name

    @field_validator("fields")
    @classmethod
    def _distinct_fields(cls, fields: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in fields:
            raise ValueError('list the fields to sync by name; "*" is not accepted')
        for name in fields:
            _identifier("field", name)
        duplicates = sorted({f for f in fields if fields.count(f) > 1})
        if duplicates:
            raise ValueError(f"fields listed twice: {', '.join(duplicates)}")
        return fields


class RemoteSource(BaseModel):
    """A validated row of the remote-sources table: sync ``source_conn_id`` into ``remote_conn_id``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    status: Status = Status.DRAFT
    source_conn_id: str = Field(min_length=1)
    remote_conn_id: str = Field(min_length=1)
    sync_schema: tuple[CollectionSchema, ...] = Field(
        validation_alias=AliasChoices("schema", "sync_schema"), min_length=1
    )
    notify_users: tuple[str, ...] = ()
    schedule: str = DEFAULT_SCHEDULE
    start_date: datetime = DEFAULT_START_DATE
    overlap_seconds: int = Field(default=60, ge=0, le=86_400)
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    retries: int = Field(default=1, ge=0, le=10)
    http_retries: int = Field(default=5, ge=0, le=20)
    http_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    write_concurrency: int = Field(default=2, ge=1, le=16)
    conflict_policy: ConflictPolicy = ConflictPolicy.LAST_WRITER_WINS
    reconcile_schedule: str | None = None
    reconcile_prune: bool = False
    # Delete the remote's copy of a file once a run leaves no item referencing it (see engine/files.py).
    prune_files: bool = False
    deadline: timedelta | None = None
    alerts: tuple[AlertChannel, ...] = ()
    description: str | None = None
    trigger: TriggerMode = TriggerMode.SCHEDULE
    event_poll_seconds: float = Field(default=2.0, ge=0.2, le=3600)

    @field_validator("sync_schema", "notify_users", "alerts", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        """The table stores JSON as text on databases without a JSON type."""
        if isinstance(value, str | bytes):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
        return [] if value is None else value

    @field_validator("schedule", "overlap_seconds", "batch_size", "retries", "http_retries",
                     "http_timeout_seconds", "write_concurrency", "conflict_policy", "reconcile_prune",
                     "prune_files", "trigger", "event_poll_seconds", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        """Nullable table columns: NULL means the default."""
        return cls.model_fields[info.field_name or ""].default if value in (None, "") else value

    @field_validator("schedule", "reconcile_schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(CRON_PRESETS.get(value, value)):
            raise ValueError(f"{value!r} is not a cron expression or preset such as '@hourly' or '*/5 * * * *'")
        return value

    @field_validator("reconcile_schedule", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("deadline", mode="before")
    @classmethod
    def _parse_deadline(cls, value: Any) -> Any:
        """``"15 minutes"``, ``"1 hour"``, ``"90s"`` or ISO 8601 (``"PT15M"``); empty means no deadline."""
        if value in (None, ""):
            return None
        if isinstance(value, str) and (match := re.fullmatch(DURATION_PATTERN, value.strip().lower())):
            return timedelta(**{DURATION_UNITS[match["unit"][0]]: float(match["amount"])})
        return value

    @field_validator("deadline")
    @classmethod
    def _positive_deadline(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("deadline must be positive, e.g. '15 minutes'")
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _parse_start_date(cls, value: Any) -> Any:
        if value in (None, ""):
            return DEFAULT_START_DATE
        if isinstance(value, str):
            return pendulum.parse(value)
        return value

    @field_validator("start_date")
    @classmethod
    def _aware_start_date(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=pendulum.UTC)

    @model_validator(mode="after")
    def _distinct_collections(self) -> RemoteSource:
        names = [c.name for c in self.sync_schema]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"schema lists collections twice: {', '.join(duplicates)}")
        return self

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.name)

    @property
    def fingerprint(self) -> str:
        """A short hash of the whole validated row: the tasks of one run must all be built from the same one."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @property
    def cron(self) -> str:
        return CRON_PRESETS.get(self.schedule, self.schedule)

    @property
    def overlap(self) -> timedelta:
        return timedelta(seconds=self.overlap_seconds)

    @property
    def collections(self) -> list[str]:
        return [c.name for c in self.sync_schema]

    @property
    def reconcile_dag_id(self) -> str:
        return self.dag_id + RECONCILE_SUFFIX

    @property
    def listens_to_events(self) -> bool:
        """Whether changes on the source start runs (``trigger`` is ``events`` or ``both``)."""
        return self.trigger is not TriggerMode.SCHEDULE


class BrokenRemote(BaseModel):
    """A row that failed validation: it still becomes a DAG, whose runs fail with ``error``."""

    model_config = ConfigDict(frozen=True)

    name: str
    error: str
    status: Literal["broken"] = "broken"
    source_conn_id: str | None = None
    notify_users: tuple[str, ...] = ()
    schedule: str = DEFAULT_SCHEDULE
    alerts: tuple[AlertChannel, ...] = ()

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.name)


def dag_id_for(name: str) -> str:
    return DAG_ID_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", name)[:200]


def row_label(row: dict[str, Any]) -> str:
    """The name a row's DAGs are called after, valid or not (an unnamed row goes by its id)."""
    return str(row.get("name") or f"row_{row.get('id', 'unknown')}")


def may_yield(row: dict[str, Any], dag_id: str) -> bool:
    """Whether the (unvalidated) row could become DAG ``dag_id``: its sync DAG or its reconcile DAG.

    Cheap enough to run on every row, so that a worker validates only the row it needs.
    """
    own = dag_id_for(row_label(row))
    return dag_id in (own, own + RECONCILE_SUFFIX)


def parse_row(row: dict[str, Any]) -> RemoteSource | BrokenRemote:
    """Validate one table row; an invalid row becomes a :class:`BrokenRemote` naming each wrong field."""
    try:
        return RemoteSource.model_validate(row)
    except ValidationError as exc:
        return BrokenRemote(
            name=row_label(row),
            error=describe_validation_error(row, exc),
            source_conn_id=row.get("source_conn_id") or None,
            notify_users=_salvage_notify_users(row.get("notify_users")),
            schedule=_salvage_schedule(row.get("schedule")),
            alerts=_salvage_alerts(row.get("alerts")),
        )


def describe_validation_error(row: dict[str, Any], exc: ValidationError) -> str:
    """One line per wrong field, e.g. ``schema[0].fields: Field required``."""
    label = row.get("name") or f"id={row.get('id')}"
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "row"
        location = re.sub(r"\.(\d+)", r"[\1]", location).replace("sync_schema", "schema")
        problems.append(f"{location}: {error['msg']}")
    return f"remote-sources row {label!r} is invalid: " + "; ".join(problems)


def _salvage_notify_users(value: Any) -> tuple[str, ...]:
    try:
        users = json.loads(value) if isinstance(value, str) else value
        return tuple(str(u) for u in users) if isinstance(users, list) else ()
    except (ValueError, TypeError):
        return ()


def _salvage_alerts(value: Any) -> tuple[AlertChannel, ...]:
    """A broken row still alerts through its channels when they, at least, are valid."""
    try:
        channels = json.loads(value) if isinstance(value, str) else value
        return tuple(AlertChannel.model_validate(c) for c in channels) if isinstance(channels, list) else ()
    except (ValueError, TypeError):
        return ()


def _salvage_schedule(value: Any) -> str:
    try:
        return RemoteSource._valid_cron(value) or DEFAULT_SCHEDULE if isinstance(value, str) else DEFAULT_SCHEDULE
    except ValueError:
        return DEFAULT_SCHEDULE


def batch_bytes() -> int:
    """The byte budget of one batch: ``DIRECTUS_SYNC_BATCH_BYTES``, or 16 MiB when it is unset.

    Batches hold at most ``batch_size`` items *and* about this many bytes of them, so that the memory a
    task needs does not grow with the size of the items (see README, "Memory").
    """
    return _parse_batch_bytes(os.environ.get(BATCH_BYTES_ENV, "").strip())


@cache
def _parse_batch_bytes(value: str) -> int:
    if not value:
        return DEFAULT_BATCH_BYTES
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTE_UNITS:
        raise ValueError(f"{BATCH_BYTES_ENV}={value!r} is not a size: give bytes, such as 16777216, 16MiB or 16MB")
    size = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if size < 1024:
        raise ValueError(f"{BATCH_BYTES_ENV}={value!r} is below 1 KiB: batches that small would read one item "
                         f"per request")
    return size
