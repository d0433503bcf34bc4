"""Airflow on the production shape, on loopback: PostgreSQL metadata DB and a Redis broker (Debian's
packages, run by the test suite itself), CeleryExecutor with two workers that are two "machines"
(each its own AIRFLOW_HOME, DAGs copy, local disk and hostname), two triggerers, and the API
server, scheduler and DAG processor of `stack.AirflowStack`."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.stack import AirflowStack, free_port, install_dags, wait_for

WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-1", "triggerer-2")
PROD_COMPONENTS = ("api-server", "scheduler", "dag-processor", *TRIGGERERS, *WORKERS)
WORKER_CONCURRENCY = 4
HOSTNAME_MODULE = "e2e_hostname"
MISSING_SERVICES = (
    "PostgreSQL and redis-server are needed by the production-shape suite; "
    "install them with `apt-get install -y postgresql redis-server` (.ci/run does it when missing)"
)


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged account the database runs as when the tests run as root (PostgreSQL refuses
    to run as root); None when the tests already run unprivileged."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise AssertionError("running as root, and neither a postgres nor a nobody account exists to run PostgreSQL")


def postgres_bindir() -> Path:
    """Where initdb and postgres are: Debian keeps them out of PATH, under /usr/lib/postgresql/<major>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise AssertionError(MISSING_SERVICES)
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp data dir, on a free loopback port, trust auth on loopback."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="e2e-postgres-")))
    process: subprocess.Popen[bytes] | None = None
    database: str = "airflow"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PostgresServer:
        bindir, user = postgres_bindir(), _service_user()
        data = self.root / "data"
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        as_user: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        with open(self.root / "initdb.log", "wb") as log:
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                timeout=180,
                **as_user,
            )
        log_file = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        # Durability is not under test here: fsync off keeps a loaded 2-core machine responsive.
        self.process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=400",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
            start_new_session=True,
            **as_user,
        )
        log_file.close()
        wait_for("PostgreSQL to accept connections", self._create_database, timeout=120, interval=0.5)
        return self

    def _create_database(self) -> bool:
        import psycopg2

        try:
            connection = psycopg2.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=5
            )
        except psycopg2.OperationalError as exc:
            assert self.process is not None and self.process.poll() is None, (
                f"PostgreSQL exited: {(self.root / 'postgres.log').read_text(errors='replace')[-2000:]}"
            )
            raise OSError(str(exc)) from exc
        connection.autocommit = True
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {self.database}")
        return True

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB directly (what the REST API does not show, e.g. trigger assignment)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=self.database, connect_timeout=10
        )
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # "fast" shutdown: disconnects the clients
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    """A Redis without persistence on a free loopback port: the Celery broker."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="e2e-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError(MISSING_SERVICES)
        log_file = open(self.root / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        wait_for("Redis to answer", self._ping, timeout=60, interval=0.2)
        return self

    def _ping(self) -> bool:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2).ping())

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextlib.contextmanager
def services() -> Iterator[tuple[PostgresServer, RedisServer]]:
    """PostgreSQL and Redis for one deployment, stopped and deleted afterwards."""
    postgres, redis = PostgresServer(), RedisServer()
    try:
        postgres.start()
        redis.start()
        yield postgres, redis
    finally:
        redis.stop()
        postgres.stop()


@dataclass
class ProductionStack(AirflowStack):
    """The central components run from `home`; each worker is a separate machine: its own home under
    `machines/`, with its own copy of the DAGs, its own local disk for anything written under
    $AIRFLOW_HOME, and its own hostname (as Airflow records it on the task instance)."""

    database_url: str = ""
    broker_url: str = ""
    components: tuple[str, ...] = PROD_COMPONENTS

    def database_env(self) -> dict[str, str]:
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        }

    def machine_home(self, component: str) -> Path:
        """A worker's or triggerer's AIRFLOW_HOME: another machine's disk, not the central home."""
        return self.home / "machines" / component

    def command(self, component: str) -> list[str]:
        assert component in self.components, component
        if component in WORKERS:
            return [
                self.airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{component}@127.0.0.1",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--without-mingle",
                "--without-gossip",
                "--skip-serve-logs",
            ]
        if component in TRIGGERERS:
            # Airflow's log server binds every interface; the suite reads the machines' logs from disk.
            return [self.airflow, "triggerer", "--skip-serve-logs"]
        return super().command(component)

    def component_env(self, component: str) -> dict[str, str]:
        env = self.env()
        if component in WORKERS or component in TRIGGERERS:
            home = self.machine_home(component)
            env.update(
                {
                    "AIRFLOW_HOME": str(home),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")])),
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.hostname",
                    "E2E_HOSTNAME": component,
                }
            )
        return env

    def migrate(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for machine in (*WORKERS, *TRIGGERERS):
            home = self.machine_home(machine)
            install_dags(home / "dags", self.home / "dags")
            (home / f"{HOSTNAME_MODULE}.py").write_text(
                "import os\n\n\ndef hostname() -> str:\n    return os.environ['E2E_HOSTNAME']\n"
            )
        with open(self.logs / "db-migrate.log", "wb") as log:
            subprocess.run(
                [self.airflow, "db", "migrate"],
                env=self.env(),
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
            )

    def freeze(self, component: str) -> None:
        """SIGSTOP the component's whole process group: alive, but silent (no heartbeat, no work)."""
        os.killpg(self.processes[component].pid, signal.SIGSTOP)

    def thaw(self, component: str) -> None:
        os.killpg(self.processes[component].pid, signal.SIGCONT)

    def stop_all(self) -> None:
        for process in self.processes.values():  # a frozen component would not act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
        super().stop_all()


def deployment_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Timings that make the drills fast: heartbeats every 1-2 s, a silent triggerer replaced after
    8 s, a task whose worker died failed after 20 s, orphaned tasks adopted after 5 s."""
    return {
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
        **extra,
    }
