"""The view's app in-process over real parts: DAG runs through `dag.test()` write real XComs to the
metadata DB, the List call goes to the emulator, and the auth manager is Airflow's simple one with
one change: a user may read only the DAGs named in their role (as a per-DAG permission would)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient

from airflow_provider_claude_batch.emulator.control import EmulatorControl
from tests.dag_runner import run_dag, write_dag


class PerDagAuthManager(SimpleAuthManager):  # type: ignore[misc]
    """The simple auth manager, except that a role "dags:a,b" may read exactly DAGs a and b."""

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: Any, method: str = "GET", **kwargs: Any
    ) -> set[str]:
        role = user.role or ""
        if role.startswith("dags:"):
            return dag_ids & set(role[5:].split(","))
        return set(super().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method=method, **kwargs))


@pytest.fixture
def view(airflow_db: Path, claude_conn: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.api_fastapi import app as api_app

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", f"{__name__}.PerDagAuthManager")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "view-test-secret-" + "0" * 64)
    # Airflow 3.0 signs with [api_auth] jwt_issuer, which newer PyJWT refuses to leave unset.
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", "claude-batch-view-test")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCH__DASHBOARD_CONN_IDS", claude_conn)
    # Airflow 3.1+ keeps the auth manager in `_AuthManagerState` (created once), 3.0 in a module global.
    state = getattr(api_app, "_AuthManagerState", None)
    previous = state.instance if state is not None else getattr(api_app, "auth_manager", None)
    if state is not None:
        state.instance = None
    manager = api_app.create_auth_manager()
    from airflow_provider_claude_batch.plugins import view_app as claude_batch

    claude_batch.LISTINGS._entries.clear()
    yield TestClient(claude_batch.app), manager
    if state is not None:
        state.instance = previous
    else:
        api_app.auth_manager = previous


def submit_dag(dags: Path, dag_id: str, tmp_path: Path) -> str:
    dag = write_dag(
        dags,
        dag_id,
        f"""
        ClaudeBatchSubmitOperator(task_id="submit", model="claude-haiku-4-5", max_tokens=8,
            requests=[{{"custom_id": "a", "params": {{"messages": [{{"role": "user", "content": "hi"}}]}}}}],
            state_path={str(tmp_path / dag_id)!r}, create_policy=FAST)
        """,
    )
    result = run_dag(dag)
    assert result.state == "success"
    return str(result.xcom("submit")[0])


def test_a_user_sees_only_the_dags_they_may_read_and_no_key(
    view: Any, airflow_db: Path, control: EmulatorControl, tmp_path: Path, emulator: Any
) -> None:
    client, manager = view
    control.configure(processing_seconds=3600)
    mine = submit_dag(airflow_db, "view_team_a", tmp_path)
    theirs = submit_dag(airflow_db, "view_team_b", tmp_path)
    token = manager.generate_jwt(SimpleAuthManagerUser(username="alice", role="dags:view_team_a"))

    answer = client.get("/api/batches", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    (conn,) = answer.json()["connections"]
    assert conn["api_error"] is None
    assert [(r["task"]["dag_id"], r["batch_id"], r["status"]) for r in conn["in_flight"]] == [
        ("view_team_a", mine, "in_progress")
    ]
    client.cookies.set("_token", token)  # the cookie Airflow's UI keeps the token in
    page = client.get("/")
    client.cookies.clear()
    assert page.status_code == 200 and mine in page.text and theirs not in page.text
    assert emulator.api_key not in page.text + answer.text

    nobody = manager.generate_jwt(SimpleAuthManagerUser(username="eve", role="dags:"))
    calls = control.state()["calls"].get("list", 0)
    empty = client.get("/api/batches", headers={"authorization": f"Bearer {nobody}"})
    assert empty.status_code == 200 and empty.json()["connections"] == []  # not even a connection's name
    assert control.state()["calls"].get("list", 0) == calls  # and no List call made for them

    admin = manager.generate_jwt(SimpleAuthManagerUser(username="root", role="admin"))
    seen = client.get("/api/batches", headers={"authorization": f"Bearer {admin}"}).json()
    assert {r["batch_id"] for r in seen["connections"][0]["in_flight"]} >= {mine, theirs}


def test_without_a_valid_token_the_json_is_refused_and_the_page_sends_to_the_login(view: Any) -> None:
    client, manager = view
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/batches", headers={"authorization": "Bearer forged.token.here"}).status_code == 401
    expired = manager.generate_jwt(
        SimpleAuthManagerUser(username="alice", role="admin"), expiration_time_in_seconds=-60
    )
    client.cookies.set("_token", expired)
    assert client.get("/api/batches").status_code == 401
    client.cookies.clear()
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login")
    assert client.post("/api/batches").status_code in (401, 405)


def test_a_slow_api_does_not_hold_the_page_past_the_timeout_and_the_page_says_so(
    view: Any, airflow_db: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_claude_batch.plugins import view_app as claude_batch

    client, manager = view
    control.configure(processing_seconds=3600)
    batch_id = submit_dag(airflow_db, "view_slow_api", tmp_path)
    monkeypatch.setattr(claude_batch.LISTINGS, "timeout", 0.5)
    control.inject({"endpoint": "list", "kind": "delay", "delay_seconds": 3})
    token = manager.generate_jwt(SimpleAuthManagerUser(username="alice", role="dags:view_slow_api"))
    started = time.monotonic()
    answer = client.get("/api/batches", headers={"authorization": f"Bearer {token}"})
    assert time.monotonic() - started < 2.5
    (conn,) = answer.json()["connections"]
    assert conn["api_error"] == "no answer within 0.5 s"
    assert [(r["batch_id"], r["status"]) for r in conn["in_flight"]] == [(batch_id, "unknown")]
    # The next refresh (within the cache's lifetime) says so too: by now the call itself timed out.
    client.cookies.set("_token", token)
    page = client.get("/").text
    client.cookies.clear()
    assert "The API was unreachable (" in page and batch_id in page
