"""Registers the Exchanges view with Airflow 3: its FastAPI app under /exchanges and an entry in
the navigation. Airflow loads it from an `airflow.plugins` entry point or the plugins folder."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from exchange_airflow.app import app

PREFIX = "/exchanges"


class ExchangesPlugin(AirflowPlugin):
    """The read-only Exchanges view for IG officers and auditors."""

    name = "exchanges"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Exchanges"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Exchanges",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "exchanges",
        }
    ]
