"""directus-sync: Apache Airflow DAGs that keep Directus collections in sync between instances."""

__version__ = "0.1.0"
