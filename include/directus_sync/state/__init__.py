"""The package's own tables, in the database of the ``directus_sync_db`` connection (SQLAlchemy Core).

Owns the table definitions and their Alembic migrations, the remote-sources rows (and the dag-processor's
snapshot of them), the run ledger with its dead letters and conflicts, the leases that keep one writer per
remote, and the recorded origins of written values. Reads and writes rows; decides nothing about a sync.

May import: ``directus_sync.config`` only.
"""
