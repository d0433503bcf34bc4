"""The "Claude Batches" view: a read-only FastAPI app under /claude-batch/ (`plugins.claude_batch` registers it).

Imported only when the API server mounts it (or `airflow plugins` lists it), never in a task's process.
Every route needs a user the auth manager logged in (the
UI's token cookie or a bearer token) and shows only the DAGs that user may read; there is no route
that writes, and neither the page nor its JSON carries a connection's key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from airflow_provider_claude_batch._compat import conf
from airflow_provider_claude_batch.dashboard.sources import ListingCache
from airflow_provider_claude_batch.plugins.claude_batch import URL_PREFIX

if TYPE_CHECKING:
    from airflow_provider_claude_batch.dashboard.model import Dashboard

CONN_TYPE = "claude_batch"
NO_STORE = {"cache-control": "no-store"}
LISTINGS = ListingCache(
    ttl=conf.getfloat("claude_batch", "dashboard_cache_seconds", fallback=30.0),
    timeout=conf.getfloat("claude_batch", "dashboard_api_timeout", fallback=5.0),
)

app = FastAPI(title="Claude Batches", docs_url=None, redoc_url=None, openapi_url=None)


class NotLoggedIn(Exception):
    """No valid token came with the request."""


async def logged_in_user(request: Request) -> Any:
    """The user whose token (Authorization bearer, or the UI's cookie) the auth manager accepts."""
    from airflow_provider_claude_batch._compat import auth_manager, jwt_cookie_name

    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(jwt_cookie_name())
    if not token:
        raise NotLoggedIn("not logged in")
    try:
        return await auth_manager().get_user_from_token(token)
    except Exception as exc:  # expired, forged, or signed with another secret: all mean "log in again"
        raise NotLoggedIn(type(exc).__name__) from exc


User = Annotated[Any, Depends(logged_in_user)]


@app.exception_handler(NotLoggedIn)
async def _refuse(request: Request, exc: NotLoggedIn) -> Any:
    """401 for the JSON routes; the page sends the browser to the login page and back."""
    if request.url.path.rstrip("/").endswith(("/api/batches", "/api/runs")):
        return JSONResponse({"detail": "Not authenticated"}, status.HTTP_401_UNAUTHORIZED, headers=NO_STORE)
    from airflow_provider_claude_batch._compat import auth_manager

    login = str(auth_manager().get_url_login())
    back = quote(f"{URL_PREFIX}/", safe="/")
    return RedirectResponse(f"{login}{'&' if '?' in login else '?'}next={back}", status.HTTP_303_SEE_OTHER)


def dashboard_for(user: Any) -> Dashboard:
    """The view for `user`: records of the DAGs they may read, and each connection's newest List page."""
    from airflow_provider_claude_batch._compat import auth_manager, connection_ids
    from airflow_provider_claude_batch.dashboard.model import build_dashboard
    from airflow_provider_claude_batch.dashboard.sources import read_tracked
    from airflow_provider_claude_batch.operators.links import DEFAULT_CONSOLE_BATCH_URL

    dag_ids = auth_manager().get_authorized_dag_ids(user=user, method="GET")
    now = time.time()
    submitted, landed = read_tracked(dag_ids, now)
    extra = conf.get("claude_batch", "dashboard_conn_ids", fallback="") or ""
    conns = dict.fromkeys([*connection_ids(CONN_TYPE), *(c.strip() for c in extra.split(",") if c.strip())])
    console = str(conf.get("claude_batch", "console_batch_url", fallback=DEFAULT_CONSOLE_BATCH_URL))
    # A user who may read no DAG sees no batch, and so neither the connections' names nor their errors.
    listings = LISTINGS.listings(conns) if dag_ids else []
    return build_dashboard(submitted, landed, listings, now=now, console_url=console)


def _ui_root() -> str:
    base = str(conf.get("api", "base_url", fallback="") or "")
    return base.rstrip("/")


@app.get("/", response_class=HTMLResponse)
def page(user: User) -> HTMLResponse:
    """The view as a page."""
    from airflow_provider_claude_batch.dashboard.render import render_html

    return HTMLResponse(render_html(dashboard_for(user), ui_root=_ui_root()), headers=NO_STORE)


@app.get("/api/batches")
def batches(user: User) -> JSONResponse:
    """Per connection: the batches in flight and those at risk."""
    from airflow_provider_claude_batch.dashboard.render import batches_json

    return JSONResponse(batches_json(dashboard_for(user)), headers=NO_STORE)


@app.get("/api/runs")
def runs(user: User) -> JSONResponse:
    """Per connection: the recent landings, and spend and savings per day over 30 days."""
    from airflow_provider_claude_batch.dashboard.render import runs_json

    return JSONResponse(runs_json(dashboard_for(user)), headers=NO_STORE)
