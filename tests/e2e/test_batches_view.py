"""The Claude Batches view in a real browser: Airflow's API server with the provider installed (the
plugin comes from its entry point, nothing configured), DAG runs that leave the emulator holding a
landed, an at-risk and an in-flight batch, a user who logs in through Airflow's own login page in
headless Chromium, and the page they then see (a screenshot is kept under tests/artifacts/)."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorServer
from tests.e2e.browser import Browser, headless_chromium, install_chromium
from tests.e2e.stack import AirflowStack, examples_env

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
LANDING, IN_FLIGHT = "claude_view_landing", "claude_view_in_flight"
USER = "viewer_admin"
PASSWORD_INPUT = "form input[type=password]"
NAV_ENTRY = "a[href='/plugin/claude-batches']"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = install_chromium()
    if binary is None:
        pytest.skip("No chromium on PATH and it cannot be installed here (apt-get as root): apt-get install chromium")
    return binary


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AirflowStack, EmulatorServer, str, dict[str, str]]]:
    home = tmp_path_factory.mktemp("view-airflow")
    shutil.copytree(REPO / "tests" / "e2e" / "view_dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({USER: password}))
    emulator = EmulatorServer(EmulatorConfig(processing_seconds=1.0)).start()
    env = {
        **examples_env(emulator.url, emulator.api_key, "http://127.0.0.1:9", f"file://{home / 'output'}"),
        "CLAUDE_VIEW_OUTPUT": f"file://{home / 'output'}",
        "AIRFLOW__CLAUDE_BATCH__STATE_PATH": f"file://{home / 'state'}",
        # The connection comes from an environment variable, which the metadata database does not list.
        "AIRFLOW__CLAUDE_BATCH__DASHBOARD_CONN_IDS": "claude_batch_default",
        # The API server's first List call also imports the SDK: on a busy 2-core machine that can
        # take longer than the default 5 s, and the page would (rightly) say the API did not answer.
        "AIRFLOW__CLAUDE_BATCH__DASHBOARD_API_TIMEOUT": "60",
        # Real logins: one user with a password, nobody is admin by default.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    }
    # No triggerer: nothing here defers (the submits do not wait; the batches to land have ended).
    stack = AirflowStack(home, env, components=("api-server", "scheduler", "dag-processor"))
    started = time.monotonic()
    try:
        stack.migrate()
        stack.start_all()
        stack.login(USER, password)
        stack.wait_for_dags([LANDING, IN_FLIGHT])
        for dag_id in (LANDING, IN_FLIGHT):
            stack.unpause(dag_id)
        landing = stack.trigger(LANDING, "2026-12-01T00:00:00Z")
        stack.wait_for_run(LANDING, landing)
        # From now on a batch takes an hour: the next one is still processing when the page is read.
        emulator.control.configure(processing_seconds=3600)
        flying = stack.trigger(IN_FLIGHT, "2026-12-01T00:00:00Z")
        stack.wait_for_run(IN_FLIGHT, flying)
        print(f"Deployment and DAG runs ready in {time.monotonic() - started:.0f} s")
        yield stack, emulator, password, {LANDING: landing, IN_FLIGHT: flying}
    finally:
        stack.stop_all()
        emulator.stop()


def unauthenticated(url: str) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("location") or exc.read().decode()


def test_a_logged_in_user_sees_in_flight_landed_and_at_risk_batches(deployment, chromium: str) -> None:  # type: ignore[no-untyped-def]
    stack, emulator, password, runs = deployment
    ids = {
        name: stack.xcom(dag_id, runs[dag_id], task, key="batch_ids")[0]
        for name, dag_id, task in (
            ("risk", LANDING, "submit_never_landed"),
            ("landed", LANDING, "submit"),
            ("flying", IN_FLIGHT, "submit"),
        )
    }
    with headless_chromium(chromium) as browser:
        # Not logged in: the page sends the browser to Airflow's login page, which brings it back.
        browser.open(f"{stack.base_url}/claude-batch/")
        browser.wait_until(f"document.querySelector({PASSWORD_INPUT!r})")
        assert "/auth/login" in browser.url()
        log_in(browser, USER, password)
        browser.wait_until("location.pathname === '/claude-batch/' && document.querySelector('h1')", timeout=60)
        dom = browser.dom()
        shot = browser.screenshot(ARTIFACTS / "claude-batches-view.png")
        # Airflow's own UI (3.1+) has it under Browse, and shows it inside its frame.
        browser.open(f"{stack.base_url}/")
        browser.wait_until("[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Browse')")
        browser.evaluate(
            "[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Browse').click()"
        )
        browser.wait_until(f"document.querySelector({NAV_ENTRY!r})", timeout=10)
        assert browser.evaluate(f"document.querySelector({NAV_ENTRY!r}).textContent.trim()") == "Claude Batches"
        browser.evaluate(f"document.querySelector({NAV_ENTRY!r}).click()")
        inside = "document.querySelector('iframe') && document.querySelector('iframe').contentDocument"
        row = json.dumps(f'[data-batch="{ids["flying"]}"]')
        browser.wait_until(f"{inside} && {inside}.querySelector({row})", timeout=60)
        in_airflow = browser.screenshot(ARTIFACTS / "claude-batches-in-airflow-ui.png")
    print(f"Screenshots of the Claude Batches view: {shot} (alone), {in_airflow} (in Airflow's UI)")
    assert "<h1>Claude Batches</h1>" in dom
    flying_row = row_of(dom, ids["flying"])
    assert "in_progress" in flying_row and "0/10" in flying_row and "expires in 2" in flying_row
    assert f"/dags/{IN_FLIGHT}/runs/" in flying_row
    risk_row = row_of(dom, ids["risk"])
    assert "class='risk'" in risk_row or 'class="risk"' in risk_row
    assert ">29.0<" in risk_row or ">28.9<" in risk_row
    assert ids["landed"] not in dom.split("At risk")[1].split("Landed")[0]
    assert "<svg" in dom and "Landed (last 1 runs)" in dom
    assert emulator.api_key not in dom


def test_the_json_routes_answer_a_token_and_never_carry_the_key(deployment) -> None:  # type: ignore[no-untyped-def]
    stack, emulator, *_ = deployment
    batches = stack.get("/claude-batch/api/batches")
    (conn,) = batches["connections"]
    assert conn["conn_id"] == "claude_batch_default" and conn["api_error"] is None
    assert [r["task"]["dag_id"] for r in conn["in_flight"]] == [IN_FLIGHT]
    assert [r["task"]["task_id"] for r in conn["at_risk"]] == ["submit_never_landed"]
    landed = stack.get("/claude-batch/api/runs")["connections"][0]["landed"]
    assert [(r["task"]["dag_id"], r["requests"]) for r in landed] == [(LANDING, 6)]
    assert landed[0]["batch_usd"] > 0 and landed[0]["savings_usd"] > 0
    assert emulator.api_key not in json.dumps(batches) + json.dumps(landed)
    # The API server took the plugin from the installed provider, with its navigation entry (3.1+).
    plugins = stack.get("/api/v2/plugins?limit=100")["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "claude_batch"]
    assert [v["href"] for v in ours["external_views"]] == ["/claude-batch/"]


def test_an_unauthenticated_request_is_refused_and_nothing_can_change_a_batch(deployment) -> None:  # type: ignore[no-untyped-def]
    stack, *_ = deployment
    for route in ("/claude-batch/api/batches", "/claude-batch/api/runs"):
        assert unauthenticated(stack.base_url + route)[0] == 401
    code, location = unauthenticated(stack.base_url + "/claude-batch/")
    assert code == 303 and "/auth/login" in location
    request = urllib.request.Request(stack.base_url + "/claude-batch/api/batches", method="DELETE")
    request.add_header("authorization", f"Bearer {stack.token}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405


def log_in(browser: Browser, user: str, password: str) -> None:
    """Type the credentials into Airflow's login form and submit it, as a user does."""
    browser.type_into("form input[name=username]", user)
    browser.type_into(PASSWORD_INPUT, password)
    browser.wait_until("!document.querySelector('form button[type=submit]').disabled", timeout=10)
    browser.evaluate("document.querySelector('form button[type=submit]').click()")


def row_of(dom: str, batch_id: str) -> str:
    """The table row that holds `batch_id`."""
    at = dom.index(f'data-batch="{batch_id}"') if f'data-batch="{batch_id}"' in dom else dom.index(batch_id)
    start = dom.rindex("<tr", 0, at)
    return dom[start : dom.index("</tr>", at)]
