"""Where the activity trigger lived before the layers: Airflow stores a trigger's class path in its database.

Triggers registered by an earlier version name ``directus_sync.events.DirectusActivityTrigger`` until the
dag-processor parses the DAGs again; this alias lets the triggerer load them meanwhile.
"""

from directus_sync.airflow.trigger import DirectusActivityTrigger

__all__ = ["DirectusActivityTrigger"]
