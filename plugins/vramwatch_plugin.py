"""Airflow plugin: the vramwatch page (VRAM history, open incidents, latest seed table and report) in Airflow's UI.

The page itself is vramwatch.ui, a FastAPI app that knows nothing of Airflow; the API server mounts it under
/vramwatch and the nav entry shows it in an iframe. Importing this module opens no database (every Airflow
component imports plugins at start); the warehouse is opened on the page's first request.

Airflow authenticates its own API routers only: a plugin's app is mounted beside them and would be open to anyone
who reaches the API server. So every request here, report files included, must carry an Airflow sign-in.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import Request

from vramwatch.ui.app import create_app

URL_PREFIX = "/vramwatch"


async def airflow_user(request: Request) -> object:
    """The signed-in Airflow user, decided by Airflow's own check (a bearer token, else the UI's session cookie);
    raises 401/403 like Airflow's API does."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user  # API server only, on first request

    return await get_user(request, None, await bearer_scheme(request))


class VramwatchPlugin(AirflowPlugin):
    name = "vramwatch"
    fastapi_apps = [{"app": create_app(authenticate=airflow_user), "url_prefix": URL_PREFIX, "name": "vramwatch"}]
    external_views = [
        {
            "name": "VRAM history",
            # Relative on purpose: the UI resolves it against its <base href>, i.e. Airflow's [api] base_url.
            "href": "vramwatch/",
            "destination": "nav",
            "url_route": "vramwatch",  # the UI shows the page at <base_url>/plugin/vramwatch
        }
    ]
