"""Where each value was first made: the order that decides conflicts across any number of hops.

A value's *origin* is the instance where someone (not the sync) made the change, and the time that
instance's activity log gives it. On an instance, the origin of an item's value is the later of

- its latest change by anyone but the sync (made there), and
- the origin the sync recorded when it last wrote the item there (table ``directus_sync_origins``).

The later one is the value's origin because the sync writes only over older origins: a sync write after
a local change carries a newer origin, and a local change after a sync write is newer than it. Comparing
origins instead of "who changed it on this instance" is what lets A's value, passed on by B, still lose
to C's newer one, however many instances it travelled through. The order is total (time, then the
instance's connection id), so every instance settles every pair of values the same way and a mesh
converges, even when clocks disagree; clocks only decide which of two close edits wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from directus_sync.directus.activity import parse_timestamp
from directus_sync.state.tables import origins

# Keys asked for in one query: well under every database's bound-parameter limit.
LOOKUP_CHUNK = 500
# The origin time of a value its instance shows no change for: older than any change.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Origin:
    """When and on which instance (by connection id) a value was made; later sorts greater."""

    at: datetime
    instance: str

    @classmethod
    def of_change(cls, timestamp: str, instance: str) -> Origin:
        return cls(parse_timestamp(timestamp), instance)

    def describe(self) -> str:
        return f"{self.at.isoformat()} on {self.instance}"


def newer(known: Origin | None, found: Origin) -> Origin:
    """The later of an origin known so far (if any) and one just found."""
    return found if known is None else max(known, found)


def recorded(engine: Engine, instance: str, collection: str, keys: Sequence[str]) -> dict[str, Origin]:
    """The origins the sync recorded for ``keys`` of ``collection`` on ``instance``."""
    found: dict[str, Origin] = {}
    with engine.connect() as conn:
        for start in range(0, len(keys), LOOKUP_CHUNK):
            query = sa.select(origins.c.item_key, origins.c.origin_at, origins.c.origin_instance).where(
                origins.c.instance == instance, origins.c.collection == collection,
                origins.c.item_key.in_(keys[start:start + LOOKUP_CHUNK]))
            for key, at, origin_instance in conn.execute(query):
                found[key] = Origin(_utc(at), origin_instance)
    return found


def recorded_since(engine: Engine, instance: str, collection: str, since: datetime) -> bool:
    """Whether the sync wrote any value of ``collection`` to ``instance`` whose origin is ``since`` or later."""
    query = sa.select(origins.c.id).where(origins.c.instance == instance, origins.c.collection == collection,
                                          origins.c.origin_at >= since).limit(1)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def staged_record(sent: Any, key: str, origin: Origin) -> dict[str, Any]:
    """One line of a plan's origins file: a key as the apply step sends it (``sent``) and in canonical
    form (``key``), and the origin of the value written."""
    return {"sent": str(sent), "key": key, "at": origin.at.isoformat(), "instance": origin.instance}


class Recorder:
    """Records the origins of a plan's writes as the remote accepts them (thread-safe: one short
    transaction per written batch), so that a recorded origin always describes a value the remote has.

    The plan's origins file is read once into memory: one entry per staged write of the collection.
    """

    def __init__(self, engine: Engine, instance: str, collection: str, staged: Iterable[dict[str, Any]]) -> None:
        self.engine, self.instance, self.collection = engine, instance, collection
        self.carried = {r["sent"]: (r["key"], Origin(datetime.fromisoformat(r["at"]), r["instance"]))
                        for r in staged}

    def written(self, sent_keys: Iterable[str]) -> None:
        """Record the origins of the writes of ``sent_keys`` (keys as sent), which the remote accepted."""
        record(self.engine, self.instance, self.collection,
               dict(c for k in sent_keys if (c := self.carried.get(k)) is not None))


def record(engine: Engine, instance: str, collection: str, written: Mapping[str, Origin]) -> None:
    """Note the origins of the values the sync is writing to ``instance`` (replacing older notes)."""
    if not written:
        return
    now = datetime.now(UTC)
    keys = list(written)
    rows = [{"instance": instance, "collection": collection, "item_key": key, "origin_instance": o.instance,
             "origin_at": o.at, "recorded_at": now} for key, o in written.items()]
    # Runs writing one instance never overlap (see state/leases.py), so delete-then-insert cannot race.
    with engine.begin() as conn:
        for chunk in _chunks(keys):
            conn.execute(origins.delete().where(origins.c.instance == instance, origins.c.collection == collection,
                                                origins.c.item_key.in_(chunk)))
        conn.execute(origins.insert(), rows)


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), LOOKUP_CHUNK):
        yield keys[start:start + LOOKUP_CHUNK]


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every origin time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
