"""The Airflow wiring: the DAGs generated from the remote-sources table and the steps their tasks run.

Owns the DAG factory (one DAG per remote, task ids ``extract_changes``, ``filter_schema``,
``apply_deletes``, ``apply_updates``, ``apply_creates``, ``record_run``, ``notify_on_failure``), the step
bodies that read Airflow's context and call the engine, event mode (the activity trigger, schedules on
assets, the watermark and the one-task run), and alerts. The only layer that touches a task's context.

May import: ``directus_sync.config``, ``directus_sync.directus``, ``directus_sync.state``,
``directus_sync.engine``.
"""
