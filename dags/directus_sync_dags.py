"""Airflow DAG file: one Directus sync DAG per published row of the remote-sources table (see the README).

Airflow only parses files that mention both "airflow" and "dag" (DAG discovery safe mode): this one
builds its DAGs through the factory, so this docstring is what makes it discoverable.
"""

from directus_sync.airflow.factory import generate_dags

globals().update(generate_dags())
