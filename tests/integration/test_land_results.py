"""Landing results through real Airflow (`dag.test()`) into local storage, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag
from tests.helpers import printed

LAND_HEADER = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator\n"


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _flow(tmp_path: Path, out: Path, n: int = 6, extra: str = "", submit_extra: str = "") -> str:
    return (
        LAND_HEADER
        + f"""
submit = ClaudeBatchSubmitOperator(
    task_id="submit", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / "state")!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"item {{i}}"}}]}}}}
              for i in range({n})]{submit_extra})
wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r}{extra})
submit >> wait >> land
"""
    )


def test_three_task_flow_lands_complete_files_and_a_manifest(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes(
        {"match": "r1", "outcome": "errored", "error_type": "overloaded_error"}, {"match": "r2", "outcome": "expired"}
    )
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "land_local",
        _flow(tmp_path, out, extra=", formats=['jsonl', 'csv', 'parquet']", submit_extra=", max_requests_per_batch=4"),
    )
    result = run_dag(dag)
    assert result.state == "success"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["requests"] == 6
    assert manifest["counts"] == {"succeeded": 4, "errored": 1, "canceled": 0, "expired": 1}
    assert len(manifest["batches"]) == 2
    names = {f["name"] for f in manifest["files"]}
    batch_ids = [b["id"] for b in manifest["batches"]]
    assert names == {f"raw/{b}.jsonl" for b in batch_ids} | {
        "results.jsonl",
        "failures.jsonl",
        "results.csv",
        "results.parquet",
    }
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(6)]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {(f["custom_id"], f["result_type"], f["error_type"]) for f in failures} == {
        ("r1", "errored", "overloaded_error"),
        ("r2", "expired", None),
    }
    assert manifest["cost"]["batch_usd"] > 0
    assert manifest["cost"]["standard_usd"] == pytest.approx(2 * manifest["cost"]["batch_usd"])
    assert result.xcom("land")["counts"] == manifest["counts"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _objects(s3_server: str, bucket: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_output_to_an_s3_compatible_server_works_like_local(
    dags: Path, control: EmulatorControl, tmp_path: Path, s3_server: str, s3_bucket: str
) -> None:
    control.configure(processing_seconds=0.2)
    dag = write_dag(
        dags,
        "land_s3",
        _flow(tmp_path, Path("unused"), extra=", formats=['jsonl', 'csv'], storage_conn_id='aws_default'").replace(
            "'unused'", repr(f"s3://{s3_bucket}/out/{{{{ ds }}}}/")
        ),
    )
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


def test_failures_are_reported_by_default_and_fail_the_task_past_the_threshold(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes(
        {"match": "r[0-2]", "outcome": "errored", "error_type": "api_error"}, {"match": "r3", "outcome": "expired"}
    )
    lenient = write_dag(dags, "policy_default", _flow(tmp_path, tmp_path / "a"))
    assert run_dag(lenient).task_state("land") == "success"
    assert "4 of 6 requests failed" in capfd.readouterr().out
    strict = write_dag(dags, "policy_strict", _flow(tmp_path, tmp_path / "b", extra=", max_failed_fraction=0.5"))
    result = run_dag(strict)
    assert result.task_state("land") == "failed"
    assert "4 of 6 requests failed (66.7% > max_failed_fraction 50.0%)" in printed(capfd)
    assert (tmp_path / "b" / "_manifest.json").exists()  # landed first, then failed


def test_the_output_is_an_asset_or_an_alias_when_templated(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    from airflow.sdk import Asset, AssetAlias

    from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator

    fixed = ClaudeBatchResultsOperator(task_id="fixed", batch_ids="b", output_path="s3://bucket/out/")
    assert fixed.outlets == [Asset(uri="s3://bucket/out")]
    templated = ClaudeBatchResultsOperator(task_id="daily", batch_ids="b", output_path="s3://bucket/{{ ds }}/")
    assert templated.outlets == [AssetAlias(name="claude_batch_results__daily")]
    control.configure(processing_seconds=0.1)
    dag = write_dag(
        dags, "asset_alias", _flow(tmp_path, Path("unused")).replace("'unused'", repr(str(tmp_path / "{{ ds }}")))
    )
    result = run_dag(dag)
    assert result.task_state("land") == "success"
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        uris = [uri for (uri,) in session.query(AssetModel.uri).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)]
    assert f"file://{tmp_path}/{result.run.logical_date.date().isoformat()}" in uris


def test_openlineage_facets_name_the_batches_and_the_output(tmp_path: Path) -> None:
    from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator

    operator = ClaudeBatchResultsOperator(task_id="land", batch_ids="b", output_path="s3://bucket/out/")
    operator._landed = ("s3://bucket/out/2026-01-01", ["msgbatch_1"])
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://bucket", "out/2026-01-01")]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("anthropic://message-batches", "msgbatch_1")]
