"""Landing results through real Airflow (`dag.test()`) into local storage, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag

LAND_HEADER = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator\n"


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _flow(tmp_path: Path, out: Path, n: int = 6, extra: str = "", submit_extra: str = "") -> str:
    return LAND_HEADER + f"""
submit = ClaudeBatchSubmitOperator(
    task_id="submit", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / 'state')!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"item {{i}}"}}]}}}}
              for i in range({n})]{submit_extra})
wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r}{extra})
submit >> wait >> land
"""


def test_three_task_flow_lands_complete_files_and_a_manifest(dags: Path, control: EmulatorControl,
                                                             tmp_path: Path) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "r1", "outcome": "errored", "error_type": "overloaded_error"},
                         {"match": "r2", "outcome": "expired"})
    out = tmp_path / "out"
    dag = write_dag(dags, "land_local", _flow(tmp_path, out, extra=", formats=['jsonl', 'csv', 'parquet']",
                                              submit_extra=", max_requests_per_batch=4"))
    result = run_dag(dag)
    assert result.state == "success"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["requests"] == 6
    assert manifest["counts"] == {"succeeded": 4, "errored": 1, "canceled": 0, "expired": 1}
    assert len(manifest["batches"]) == 2
    names = {f["name"] for f in manifest["files"]}
    batch_ids = [b["id"] for b in manifest["batches"]]
    assert names == {f"raw/{b}.jsonl" for b in batch_ids} | {"results.jsonl", "failures.jsonl", "results.csv",
                                                               "results.parquet"}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(6)]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {(f["custom_id"], f["result_type"], f["error_type"]) for f in failures} == {
        ("r1", "errored", "overloaded_error"), ("r2", "expired", None)}
    assert manifest["cost"]["batch_usd"] > 0
    assert manifest["cost"]["standard_usd"] == pytest.approx(2 * manifest["cost"]["batch_usd"])
    assert result.xcom("land")["counts"] == manifest["counts"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _objects(s3_server: str, bucket: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_output_to_an_s3_compatible_server_works_like_local(dags: Path, control: EmulatorControl, tmp_path: Path,
                                                            s3_server: str, s3_bucket: str) -> None:
    control.configure(processing_seconds=0.2)
    dag = write_dag(dags, "land_s3", _flow(tmp_path, Path("unused"),
                                           extra=", formats=['jsonl', 'csv'], storage_conn_id='aws_default'").replace(
        "'unused'", repr(f"s3://{s3_bucket}/out/{{{{ ds }}}}/")))
    result = run_dag(dag)
    assert result.state == "success"
    objects = _objects(s3_server, s3_bucket)
    prefix = f"out/{result.run.logical_date.date().isoformat()}/"
    manifest = json.loads(objects[prefix + "_manifest.json"])
    for info in manifest["files"]:
        body = objects[prefix + info["name"]]
        assert len(body) == info["bytes"]
        import hashlib

        assert hashlib.sha256(body).hexdigest() == info["sha256"]
    assert manifest["requests"] == 6
    assert set(objects) == {prefix + f["name"] for f in manifest["files"]} | {prefix + "_manifest.json"}
