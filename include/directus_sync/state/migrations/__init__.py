"""Schema migrations of the package's tables, run by Alembic (which ships with Airflow).

The revisions live in ``versions/`` beside this file and are recorded in their own version table,
:data:`VERSION_TABLE`, so they never touch Airflow's ``alembic_version`` even when the tables share Airflow's
metadata database. :func:`upgrade` (``directus-sync db upgrade``) brings any database to the head revision:

* a fresh database: every revision from the first;
* a database the package's tables were made in before the migrations were Alembic's (tables present, no
  version table): missing tables and columns of the baseline (revision ``0001``, the schema of release
  62fb753) are created the way the old ``migrate()`` did, the database is stamped ``0001`` and upgraded from
  there (revision ``0002`` repairs what that era's ``ADD COLUMN`` lost);
* a database at head: nothing.

A new schema change is a new file in ``versions/`` whose ``down_revision`` is the current head; write it
with ``op.batch_alter_table`` where it alters columns, so that it also runs on SQLite.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from directus_sync.state.migrations import baseline

VERSION_TABLE = "directus_sync_alembic_version"
BASELINE_REVISION = "0001"
HERE = Path(__file__).resolve().parent
# Serialises concurrent upgrades of one PostgreSQL database (any constant; "directus_sync" in ASCII).
_PG_LOCK_KEY = 0x6469726563747573


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the revision before (None: no version table) and after."""

    before: str | None
    after: str | None
    stamped: bool = False  # the tables predated the migrations and were stamped at the baseline first

    @property
    def changed(self) -> bool:
        return self.before != self.after


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision this package ships."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database (None when it has no version table or no row)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current(engine: Engine) -> str | None:
    with _quiet_alembic(), engine.connect() as conn:
        return current_revision(conn)


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs every context set-up at INFO, which Airflow's logging shows; callers report instead."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Bring the package's tables to ``revision`` (head by default) in one transaction. Safe to repeat."""
    with _quiet_alembic(), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = current_revision(conn)
        stamped = False
        if before is None and predates_alembic(conn):
            complete_baseline(conn)
            command.stamp(config(conn), BASELINE_REVISION)
            stamped = True
        command.upgrade(config(conn), revision)
        return Upgrade(before, current_revision(conn), stamped)


def predates_alembic(conn: Connection) -> bool:
    """Whether the database holds any of the package's tables but no revision of them."""
    present = set(sa.inspect(conn).get_table_names())
    return VERSION_TABLE not in present and bool(present & set(baseline.define().tables))


def complete_baseline(conn: Connection) -> list[str]:
    """Create the baseline tables and columns a pre-Alembic database lacks, as its ``migrate()`` would have.

    Tables are created whole; a missing column is added nullable and without its server default (as the old
    ``ADD COLUMN`` did), which revision ``0002`` then repairs. Returns what was added, as ``table[.column]``.
    """
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    ops = Operations(MigrationContext.configure(conn))
    added: list[str] = []
    for table in baseline.define().sorted_tables:
        if table.name not in present:
            table.create(conn)
            added.append(table.name)
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                ops.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
                added.append(f"{table.name}.{column.name}")
    return added


def schema_differences(conn: Connection, metadata: sa.MetaData) -> list[Any]:
    """Alembic's autogenerate differences between the database and ``metadata``'s tables (empty: equal).

    Compares columns, types, nullability, server defaults, indexes and unique constraints of the tables
    ``metadata`` declares; other tables in the database (Airflow's, the version table) are ignored.
    """
    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or name in metadata.tables

    context = MigrationContext.configure(conn, opts={
        "compare_type": True, "compare_server_default": True, "include_name": include_name})
    return list(compare_metadata(context, metadata))
