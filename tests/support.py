"""Helpers shared by the unit and the end-to-end tests."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def rows_of(engine: Engine, table: sa.Table, remote: str | None = None) -> list[dict[str, Any]]:
    """Rows of one of the package's tables, optionally for one remote, newest first."""
    query = sa.select(table).order_by(table.c.id.desc())
    if remote is not None:
        query = query.where(table.c.remote == remote)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
