"""Airflow plugin: the vramwatch page (VRAM history, open incidents, latest seed table and report) in Airflow's UI.

The page itself is vramwatch.ui, a FastAPI app that knows nothing of Airflow; the API server mounts it under
/vramwatch and the nav entry shows it in an iframe. Importing this module opens no database (every Airflow
component imports plugins at start); the warehouse is opened on the page's first request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from vramwatch.ui import create_app

URL_PREFIX = "/vramwatch"


class VramwatchPlugin(AirflowPlugin):
    name = "vramwatch"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "vramwatch"}]
    external_views = [
        {
            "name": "VRAM history",
            # Relative on purpose: the UI resolves it against its <base href>, i.e. Airflow's [api] base_url.
            "href": "vramwatch/",
            "destination": "nav",
            "url_route": "vramwatch",  # the UI shows the page at <base_url>/plugin/vramwatch
        }
    ]
