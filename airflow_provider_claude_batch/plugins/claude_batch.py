"""`ClaudeBatchPlugin`: the "Claude Batches" view in the API server (the app: `plugins.view_app`).

Registered by the provider (its `plugins` info and an `airflow.plugins` entry point), so installing the
provider on the API server is all it takes. Airflow loads every plugin in every task's process too (for
macros and listeners), so this module stays light: the FastAPI app is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/claude-batch"


class ClaudeBatchPlugin(AirflowPlugin):
    """Serves the view in the API server; on Airflow 3.1+ it also has an entry in the navigation."""

    name = "claude_batch"
    # Read by Airflow 3.1+ (3.0 ignores it: the view is reachable at /claude-batch/).
    external_views = [
        {
            "name": "Claude Batches",
            "href": f"{URL_PREFIX}/",
            "url_route": "claude-batches",
            "destination": "nav",
            "category": "browse",
        }
    ]

    # A property, not a list: fastapi and the app are imported only when the API server reads it.
    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The view's app, imported when the API server mounts it (never in a task's process)."""
        from airflow_provider_claude_batch.plugins.view_app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Claude Batches"}]
