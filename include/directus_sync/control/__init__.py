"""The control plane: what operators run beside the DAGs.

Owns the ``directus-sync`` CLI (the remote-sources table, migrations, provisioning, checks, runs by hand),
``check`` (prerequisites of a remote, asked of both instances), and the status page (an Airflow plugin's
FastAPI app showing each remote's runs, lag and open issues, filtered by the user's DAG permissions).

May import: every other layer.
"""
