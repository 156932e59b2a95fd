"""Repair what the ``ADD COLUMN`` era lost: server defaults, NOT NULL, unique constraints and indexes.

Before the migrations were Alembic's, ``migrate()`` added a column a table lacked as bare ``ADD COLUMN <type>``
(no NOT NULL, no default) and never created an index or constraint declared after its table. This revision
compares each baseline table with the database and adds what is missing; on a database the baseline
created whole it changes nothing. Columns are altered through ``batch_alter_table`` (a table copy on SQLite,
plain ``ALTER TABLE`` on PostgreSQL). NULLs in a column that has a default are set to it first; a NOT NULL
column with NULLs and no default, or a unique constraint over duplicate rows, is left as it is, with a
warning.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from directus_sync.state.migrations import baseline

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("directus_sync.state.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    for table in baseline.define().sorted_tables:
        _repair(bind, table)


def downgrade() -> None:
    """Nothing to undo: the repaired schema is the baseline's own."""


def _repair(bind: Connection, table: sa.Table) -> None:
    inspector = sa.inspect(bind)
    reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
    quote = bind.dialect.identifier_preparer.quote
    ddl = bind.dialect.ddl_compiler(bind.dialect, None)  # type: ignore[arg-type]
    alterations: list[dict[str, Any]] = []
    for column in table.columns:
        found = reflected.get(column.name)
        if found is None or column.primary_key:
            continue
        change: dict[str, Any] = {}
        default = ddl.get_column_default_string(column) if column.server_default is not None else None
        if default is not None and found.get("default") is None:
            change["server_default"] = sa.text(default)
        if not column.nullable and found["nullable"]:
            if default is not None:
                bind.execute(sa.text(f"UPDATE {quote(table.name)} SET {quote(column.name)} = {default} "
                                     f"WHERE {quote(column.name)} IS NULL"))
            if _count(bind, f"SELECT count(*) FROM {quote(table.name)} WHERE {quote(column.name)} IS NULL"):
                log.warning("%s.%s has NULLs and no default: left nullable", table.name, column.name)
            else:
                change["nullable"] = False
        if change:
            alterations.append({"column_name": column.name, "existing_type": column.type,
                                "existing_nullable": found["nullable"], **change})

    have_unique = [set(u["column_names"]) for u in inspector.get_unique_constraints(table.name)]
    indexes = inspector.get_indexes(table.name)
    have_unique += [{str(n) for n in i["column_names"]} for i in indexes if i.get("unique")]
    uniques: list[tuple[str, list[str]]] = []
    for constraint in table.constraints:
        if not isinstance(constraint, sa.UniqueConstraint):
            continue
        names = [c.name for c in constraint.columns]
        if set(names) in have_unique:
            continue
        listed = ", ".join(quote(n) for n in names)
        if _count(bind, f"SELECT count(*) FROM (SELECT {listed} FROM {quote(table.name)} "
                        f"GROUP BY {listed} HAVING count(*) > 1) AS duplicates"):
            log.warning("%s has duplicate rows over (%s): unique constraint not added", table.name, listed)
            continue
        uniques.append((str(constraint.name or f"uq_{table.name}_{'_'.join(names)}"), names))

    if alterations or uniques:
        log.info("repairing %s: %s", table.name,
                 ", ".join([a["column_name"] for a in alterations] + [u[0] for u in uniques]))
        with op.batch_alter_table(table.name) as batch:
            for alteration in alterations:
                batch.alter_column(**alteration)
            for name, names in uniques:
                batch.create_unique_constraint(name, names)

    have_index: set[Any] = {str(i["name"]) for i in indexes} | {tuple(i["column_names"]) for i in indexes}
    for index in table.indexes:
        names = [c.name for c in index.columns]
        if str(index.name) not in have_index and tuple(names) not in have_index:
            log.info("creating index %s on %s", index.name, table.name)
            op.create_index(str(index.name), table.name, names, unique=bool(index.unique))


def _count(bind: Connection, query: str) -> int:
    return int(bind.execute(sa.text(query)).scalar() or 0)
