"""Airflow plugin: the "Directus Sync" status page, in the UI's navigation.

Thin on purpose: the page lives in the installed package (``directus_sync.control.statuspage``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin  # the documented path: airflow.sdk has no AirflowPlugin

from directus_sync.control.statuspage import URL_PREFIX, app


class DirectusSyncPlugin(AirflowPlugin):
    name = "directus_sync"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [{"app": app, "url_prefix": URL_PREFIX, "name": "Directus Sync"}]
    external_views: ClassVar[list[dict[str, Any]]] = [{
        "name": "Directus Sync",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "url_route": "directus-sync",
    }]
