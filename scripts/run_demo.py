"""Run the smoke DAG end to end on an embedded Airflow (SQLite under .demo/), against the local
emulator, or against the real API when ANTHROPIC_API_KEY is set. Called by `scripts/demo`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
DAG_FILE = REPO / "dags_examples" / "claude_batch_smoke.py"


def _prepare_airflow() -> None:
    os.environ["AIRFLOW_HOME"] = str(DEMO_HOME / "airflow")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags_examples")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
    os.environ["AIRFLOW__CLAUDE_BATCH__STATE_PATH"] = "file://" + str(DEMO_HOME / "state")
    airflow = Path(sys.executable).with_name("airflow")
    print(f"Airflow home: {os.environ['AIRFLOW_HOME']} (SQLite); migrating the metadata database...", flush=True)
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def _connection(base_url: str | None, api_key: str) -> None:
    conn: dict[str, object] = {"conn_type": "claude_batch", "password": api_key, "extra": {"timeout": 120}}
    if base_url:
        conn["host"] = base_url
    os.environ["AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT"] = json.dumps(conn)


def main() -> int:
    _prepare_airflow()
    from airflow_provider_claude_batch.emulator import EmulatorServer

    real_key = os.environ.get("ANTHROPIC_API_KEY")
    emulator = None
    if real_key:
        model = os.environ.get("CLAUDE_BATCH_DEMO_MODEL", "claude-haiku-4-5")
        os.environ.setdefault("CLAUDE_BATCH_DEMO_POLL_SECONDS", "60")
        print(f"ANTHROPIC_API_KEY is set: this run submits 3 small requests (max 64 output tokens each) "
              f"to the real Message Batches API with model {model}, billed at batch price (well under "
              "one cent). Batches usually end within minutes but may take up to 24 h.", flush=True)
        _connection(os.environ.get("ANTHROPIC_BASE_URL"), real_key)
    else:
        os.environ.setdefault("CLAUDE_BATCH_DEMO_POLL_SECONDS", "0.5")
        emulator = EmulatorServer().start()
        print(f"No ANTHROPIC_API_KEY: using the local emulator at {emulator.url} (nothing is billed).", flush=True)
        _connection(emulator.url, emulator.api_key)

    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("claude_batch_smoke", DAG_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = module.smoke_dag.test()
        state = str(getattr(run, "state", "unknown"))
        print(f"\nDAG run {run.run_id}: {state}")
        if emulator is not None:
            made = emulator.control.state(custom_ids=False)["batches_created"]
            print(f"Emulator: {made} batch created.")
        return 0 if state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    raise SystemExit(main())
