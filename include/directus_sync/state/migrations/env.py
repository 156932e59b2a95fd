"""Alembic's environment for the package's tables: always online, on the connection the caller passes.

:func:`directus_sync.state.migrations.upgrade` puts that connection in ``config.attributes["connection"]``; the
revisions are recorded in their own version table, never in Airflow's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from directus_sync.state.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the package's migrations through `directus-sync db upgrade` "
                       "(directus_sync.state.migrations.upgrade), which passes the connection")
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
