"""A real Airflow deployment on loopback for the end-to-end suite: API server, scheduler, DAG
processor and triggerer as separate processes (LocalExecutor, SQLite), plus a client for its REST
API. Components can be killed and restarted one by one, which is what the fault drills need."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SETTINGS_MODULE = "e2e_sqlite_settings"
SQLITE_BUSY_TIMEOUT_SECONDS = 60
TERMINAL_RUN_STATES = {"success", "failed"}
SIGTERM_GRACE_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, KeyError) as exc:  # a component still starting
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


@dataclass
class AirflowStack:
    """One Airflow home and its four long-running components, each in its own process group."""

    home: Path
    env_overrides: Mapping[str, str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    components: tuple[str, ...] = COMPONENTS
    # A bearer token for the REST calls, once `login` has run (deployments that do not make every user admin).
    token: str | None = None

    @property
    def airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.home / "component-logs"

    def env(self) -> dict[str, str]:
        # The test process's own Airflow settings (unit-test mode, its home) must not leak in.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        base.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
                **self.database_env(),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(self.home), os.environ.get("PYTHONPATH")])),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                # A 500 then names its database error ("database is locked" is retried by `request`).
                "AIRFLOW__API__EXPOSE_STACKTRACE": "True",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
                "AIRFLOW__API__SECRET_KEY": self._secret("api"),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
                # A killed triggerer's triggers move to the next one after this many seconds without a heartbeat.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
        )
        base.update(self.env_overrides)
        return base

    def database_env(self) -> dict[str, str]:
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            # Five components write one SQLite file: a busy one waits up to a minute for the lock
            # (sqlite3's default is 5 s). A lock SQLite refuses at once is retried by `request`.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SETTINGS_MODULE}.CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{SETTINGS_MODULE}.CONNECT_ARGS",
        }

    def command(self, component: str) -> list[str]:
        assert component in self.components, component
        args = [self.airflow, component]
        if component == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        return args

    def component_env(self, component: str) -> dict[str, str]:
        return self.env()

    def _secret(self, name: str) -> str:
        path = self.home / f".{name}-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
        return path.read_text()

    # ---- lifecycle ---------------------------------------------------------------------------
    def migrate(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.home / f"{SETTINGS_MODULE}.py").write_text(
            f"CONNECT_ARGS = {{'timeout': {SQLITE_BUSY_TIMEOUT_SECONDS}}}\n"
        )
        with open(self.logs / "db-migrate.log", "wb") as log:
            subprocess.run(
                [self.airflow, "db", "migrate"],
                env=self.env(),
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
        # Write-ahead logging: readers (the API server's GETs, the UI) no longer block the writers
        # (scheduler, triggerer) or the other way round. The mode stays with the file.
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"

    def start(self, component: str) -> None:
        log = open(self.logs / f"{component}.log", "ab")  # noqa: SIM115 - owned by the process
        self.processes[component] = subprocess.Popen(
            self.command(component),
            env=self.component_env(component),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
        log.close()

    def start_all(self) -> None:
        self.start("api-server")
        wait_for("the API server", lambda: self.get("/api/v2/monitor/health"), timeout=180)
        for component in self.components[1:]:
            self.start(component)

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the component's whole process group (the component and its children).

        A SIGTERM not obeyed within SIGTERM_GRACE_SECONDS is followed by SIGKILL: Airflow's DAG
        processor can miss a SIGTERM that reaches it while it forks a parser: its handler then runs
        inside the logging module's fork hooks, which swallow the handler's SystemExit, and the
        processor goes on parsing (seen in CI: "Exception ignored in: <function _releaseLock>")."""
        process = self.processes.pop(component)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        if sig != signal.SIGKILL:
            try:
                process.wait(timeout=SIGTERM_GRACE_SECONDS)
                return
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    @contextlib.contextmanager
    def writers_stopped(self) -> Iterator[None]:
        """Stop every component but the API server meanwhile (SIGTERM, then start them again), so
        the API server is SQLite's only writer. For backfill creation: under concurrent writers
        Airflow 3.3 on SQLite can fail it with "database is locked", and its clean-up after that
        error deletes the existing runs a reprocessing backfill had taken over (the scheduler
        working on them then dies). With PostgreSQL or MySQL this is not needed."""
        running = [c for c in self.components[1:] if c in self.processes]
        stopped: list[str] = []
        try:
            for component in running:
                stopped.append(component)
                self.kill(component, signal.SIGTERM)
            yield
        finally:
            for component in stopped:
                self.start(component)

    def stop_all(self) -> None:
        for component in reversed(list(self.processes)):
            process = self.processes[component]
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for component in list(self.processes):
            process = self.processes.pop(component)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        """The end of each component's log, for a failure message."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # ---- REST API ----------------------------------------------------------------------------
    def request(self, method: str, route: str, payload: Mapping[str, Any] | None = None) -> Any:
        """One REST call. An answer caused by SQLite being locked is retried (the write was rolled
        back): a 503 on the routes that map it, a 500 whose database error says so (the server is set
        to expose it). Any other error carries the server's answer and the components' logs."""
        data = json.dumps(payload).encode() if payload is not None else None
        for attempt in range(1, 11):
            headers = {"content-type": "application/json"}
            if self.token:
                headers["authorization"] = f"Bearer {self.token}"
            request = urllib.request.Request(self.base_url + route, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=90) as response:
                    body = response.read()
                return json.loads(body) if body else None
            except urllib.error.HTTPError as exc:
                answer = exc.read().decode(errors="replace")
                locked = exc.code == 503 or (exc.code == 500 and "database is locked" in answer)
                if not locked or attempt == 10:
                    raise ApiError(f"{method} {route} answered {exc.code}: {answer[:2000]}\n{self.tail(30)}") from exc
                time.sleep(2)
        raise AssertionError("unreachable")

    def get(self, route: str) -> Any:
        return self.request("GET", route)

    def login(self, username: str, password: str) -> str:
        """A token from the auth manager's token route (the simple auth manager's); later REST calls carry it."""
        self.token = None
        self.token = str(
            self.request("POST", "/auth/token", {"username": username, "password": password})["access_token"]
        )
        return self.token

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        def parsed() -> bool:
            found = {dag["dag_id"] for dag in self.get("/api/v2/dags?limit=100")["dags"]}
            return set(dag_ids) <= found

        wait_for(f"the DAG processor to parse {dag_ids}", parsed, timeout)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, run_id: str | None = None) -> str:
        payload: dict[str, Any] = {"logical_date": logical_date}
        if run_id is not None:
            payload["dag_run_id"] = run_id
        return str(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", payload)["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        listing = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in listing["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
            "?deserialize=true&stringify=false"
        )
        return entry["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """The run once it is finished; a failure message carries the task states and component logs."""
        try:
            run = wait_for(
                f"run {dag_id}/{run_id} to finish",
                lambda: (r := self.run(dag_id, run_id))["state"] in TERMINAL_RUN_STATES and r,
                timeout,
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\ntasks: {self._ti_states(dag_id, run_id)}\n{self.tail()}") from exc
        if run["state"] != "success":
            raise AssertionError(
                f"run {dag_id}/{run_id} ended {run['state']}; tasks: {self._ti_states(dag_id, run_id)}\n{self.tail()}"
            )
        return dict(run)

    def create_backfill(self, dag_id: str, first: str, last: str, *, reprocess: str, max_active_runs: int) -> int:
        """A backfill of `dag_id` over the dates `first`..`last` (YYYY-MM-DD), through the REST API."""
        backfill = self.request(
            "POST",
            "/api/v2/backfills",
            {
                "dag_id": dag_id,
                "from_date": f"{first}T00:00:00Z",
                "to_date": f"{last}T00:00:00Z",
                "max_active_runs": max_active_runs,
                "reprocess_behavior": reprocess,
            },
        )
        return int(backfill["id"])

    def wait_for_backfill(self, dag_id: str, backfill_id: int, timeout: float = 600) -> dict[str, str]:
        """{ds: run_id} of the backfill's runs once it has completed; each run must have succeeded."""
        wait_for(
            f"backfill {backfill_id} to complete",
            lambda: self.get(f"/api/v2/backfills/{backfill_id}")["completed_at"],
            timeout,
            interval=2,
        )
        runs = {}
        for run in self.runs(dag_id):
            if run["run_type"] == "backfill" and run.get("backfill_id", backfill_id) == backfill_id:
                self.wait_for_run(dag_id, run["dag_run_id"], timeout=60)
                runs[str(run["logical_date"])[:10]] = run["dag_run_id"]
        return runs

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 240
    ) -> dict[str, Any]:
        return dict(
            wait_for(
                f"{dag_id}/{run_id}/{task_id} to be {states}",
                lambda: (
                    (ti := self.task_instances(dag_id, run_id).get(task_id)) is not None
                    and ti["state"] in states
                    and ti
                ),
                timeout,
                interval=0.5,
            )
        )

    def _ti_states(self, dag_id: str, run_id: str) -> dict[str, Any]:
        try:
            return {k: (v["state"], v["try_number"]) for k, v in self.task_instances(dag_id, run_id).items()}
        except Exception as exc:  # only for a failure message
            return {"error": repr(exc)}


class ApiError(AssertionError):
    """The REST API answered an error that is not a transient SQLite lock."""


def _terminate_with_parent() -> None:
    """In the component's process: get SIGTERM when the test process dies, so a killed test run
    leaves no Airflow behind (Linux only, like the rest of the suite)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def examples_env(emulator_url: str, api_key: str, s3_url: str, output: str) -> dict[str, str]:
    """Connections to the emulator and the S3-compatible server, and the examples' settings for fast
    drills (poll every second, retry after 2 s), landing under `output`."""
    return {
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {
                "conn_type": "claude_batch",
                "host": emulator_url,
                "password": api_key,
                "extra": {"timeout": 30, "max_retries": 2},
            }
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"},
            }
        ),
        "CLAUDE_BATCH_EXAMPLES_OUTPUT": output,
        "CLAUDE_BATCH_EXAMPLES_POLL_SECONDS": "1",
        "CLAUDE_BATCH_EXAMPLES_RETRY_DELAY_SECONDS": "2",
    }


def install_dags(dags_folder: Path, examples: Path) -> None:
    """The example DAGs as a user would deploy them: copied, with their data."""
    shutil.copytree(examples, dags_folder, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)


def deploy_variant(source: Path, target: Path, replacements: Mapping[str, str]) -> None:
    """Deploy a copy of an example with a few settings changed; each must be found exactly once."""
    text = source.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{old!r} is not in {source.name} exactly once"
        text = text.replace(old, new)
    target.write_text(text)
