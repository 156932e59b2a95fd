"""directus-sync: Airflow DAGs that keep chosen collections in sync between Directus instances.

The layers, from the bottom; each imports only those below it (``tests/unit/test_layers.py`` checks):

- ``config``: one validated row of the remote-sources table.
- ``directus``: the Directus protocol (sync and async hooks, errors, paging, fields, provisioning).
- ``state``: the package's tables (remote sources, ledger, dead letters, leases, origins; Alembic).
- ``engine``: one run's work, extract -> plan -> apply, free of Airflow's task context.
- ``airflow``: the DAG factory, the steps the tasks run, event mode, alerts.
- ``control``: the CLI, ``check`` and the status page.
"""

__version__ = "0.1.0"
