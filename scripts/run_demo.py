"""Run the nightly classification example end to end on an embedded Airflow (SQLite under .demo/),
against the local emulator, or against the real API when ANTHROPIC_API_KEY is set; then say where
the files are and what the manifest says. Called by `scripts/demo`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Everything the demo writes (Airflow home, submission records, results) stays under this folder.
DEMO_HOME = Path(os.environ.get("CLAUDE_BATCH_DEMO_HOME") or REPO / ".demo")
DAG_FILE = REPO / "dags_examples" / "nightly_classification.py"
SAMPLE_ROWS = 60


def _prepare_airflow() -> None:
    os.environ["AIRFLOW_HOME"] = str(DEMO_HOME / "airflow")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags_examples")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
    os.environ["AIRFLOW__CLAUDE_BATCH__STATE_PATH"] = "file://" + str(DEMO_HOME / "state")
    os.environ.setdefault("CLAUDE_BATCH_EXAMPLES_OUTPUT", "file://" + str(DEMO_HOME / "output"))
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
        model = os.environ.setdefault("CLAUDE_BATCH_EXAMPLES_MODEL", "claude-haiku-4-5")
        os.environ.setdefault("CLAUDE_BATCH_EXAMPLES_POLL_SECONDS", "60")
        print(
            f"ANTHROPIC_API_KEY is set: this run submits {SAMPLE_ROWS} short reviews (max 5 output tokens "
            f"each) to the real Message Batches API with model {model}, billed at batch price (well under "
            "one cent). Batches usually end within minutes but may take up to 24 h.",
            flush=True,
        )
        _connection(os.environ.get("ANTHROPIC_BASE_URL"), real_key)
    else:
        os.environ.setdefault("CLAUDE_BATCH_EXAMPLES_POLL_SECONDS", "0.5")
        emulator = EmulatorServer().start()
        emulator.control.set_outcomes({"match": ".*", "choices": ["positive", "negative", "neutral"]})
        print(f"No ANTHROPIC_API_KEY: using the local emulator at {emulator.url} (nothing is billed).", flush=True)
        _connection(emulator.url, emulator.api_key)

    try:
        import importlib.util

        sys.path.insert(0, str(DAG_FILE.parent))
        spec = importlib.util.spec_from_file_location("nightly_classification", DAG_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = module.dag.test()
        state = str(getattr(run, "state", "unknown"))
        print(f"\nDAG run {run.run_id}: {state}")
        _summarize(run)
        if emulator is not None:
            made = emulator.control.state(custom_ids=False)["batches_created"]
            print(f"Emulator: {made} batch(es) created; nothing was billed.")
        return 0 if state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


def _summarize(run: object) -> None:
    """Where the files are, and the manifest's counts, tokens and dollars."""
    from airflow.sdk import ObjectStoragePath

    logical_date = getattr(run, "logical_date", None)
    if logical_date is None:
        return
    folder = ObjectStoragePath(
        os.environ["CLAUDE_BATCH_EXAMPLES_OUTPUT"].rstrip("/")
        + f"/nightly_classification/{logical_date.date().isoformat()}/"
    )
    manifest_path = folder / "_manifest.json"
    if not manifest_path.exists():
        print(f"No manifest under {folder}")
        return
    manifest = json.loads(manifest_path.read_text())
    usage, cost = manifest["usage_total"], manifest["cost"]
    print(f"\nResults: {folder}")
    for info in manifest["files"]:
        print(f"  {info['name']:<40} {info['bytes']:>10} bytes  {info['rows']} rows")
    print(f"  {'_manifest.json':<40} (written last)")
    counts = ", ".join(f"{n} {kind}" for kind, n in manifest["counts"].items())
    print(f"Requests: {manifest['requests']} ({counts})")
    print(
        f"Tokens: {usage.get('input_tokens', 0)} input, {usage.get('output_tokens', 0)} output, "
        f"{usage.get('cache_read_tokens', 0)} cache reads"
    )
    print(
        f"Cost: ${cost['batch_usd']:.6f} at batch price vs ${cost['standard_usd']:.6f} at standard price "
        f"(saved ${cost['savings_usd']:.6f}; prices as of {cost['prices_as_of']})"
    )
    estimate = manifest.get("estimate")
    if estimate is not None:
        print(
            f"Estimated before submitting ({estimate['method']}): {estimate['input_tokens']} input tokens, "
            f"${estimate['batch_usd_low']:.6f} to ${estimate['batch_usd_high']:.6f} at batch price; actual: "
            f"{estimate['actual_input_tokens']} input tokens, ${estimate['actual_batch_usd']:.6f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
