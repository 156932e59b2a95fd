"""Where the deadline callback lived before the layers: Airflow stores a Deadline Alert's callback path with
each queued run, so runs queued by an earlier version still name ``directus_sync.alerts.on_deadline_missed``.
"""

from directus_sync.airflow.alerts import on_deadline_missed

__all__ = ["on_deadline_missed"]
