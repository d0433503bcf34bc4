"""Landing is all-or-nothing and flat in memory: real kills, broken streams, big result sets."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.exceptions import ClaudeBatchError, ResultsArchivedError
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.output.land import land_results
from airflow_provider_claude_batch.storage import as_path
from tests.helpers import make_requests

REPO = Path(__file__).resolve().parents[2]
# A short custom_id in a set: the str object (about 64 bytes) and its share of the set's table (about 40).
ID_SET_BYTES_PER_REQUEST = 112


def _ended_batch(control: EmulatorControl, count: int, prefix: str = "req") -> str:
    control.configure(processing_seconds=0)
    hook = ClaudeBatchHook()
    body = [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {
                "model": "claude-sonnet-5-5",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "x" * 400}],
            },
        }
        for i in range(count)
    ]
    return hook.create_batch(body).id


def _visible_files(root: Path) -> dict[str, str]:
    """What a reader sees: every non-hidden file and its sha256."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            found[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _probe(output: str, batch_id: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.landing_probe", output, batch_id],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _kill_mid_stream(process: subprocess.Popen[str], staging_root: Path) -> None:
    """SIGKILL once the landing has written part of a raw file into its staging area."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raws = list(staging_root.glob(".claude-batch-staging-*/raw/*.jsonl"))
        if raws and raws[0].stat().st_size > 0:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return
        assert process.poll() is None, "the landing finished before it could be killed"
        time.sleep(0.02)
    raise AssertionError("the landing never started streaming")


def test_a_kill_mid_stream_leaves_no_file_then_the_previous_complete_files(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    batch_id = _ended_batch(control, 3000)
    out = tmp_path / "out"
    out.mkdir()
    control.inject({"endpoint": "results", "kind": "slow_stream", "delay_seconds": 0.3})
    _kill_mid_stream(_probe(str(out), batch_id), out)
    assert _visible_files(out) == {}  # nothing a reader could take for results

    land_results(ClaudeBatchHook(), [batch_id], as_path(str(out)))
    complete = _visible_files(out)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == {
        k: v for k, v in complete.items() if k != "_manifest.json"
    }

    control.inject({"endpoint": "results", "kind": "slow_stream", "delay_seconds": 0.3})
    _kill_mid_stream(_probe(str(out), batch_id), out)
    assert _visible_files(out) == complete  # the previous complete files, untouched

    land_results(ClaudeBatchHook(), [batch_id], as_path(str(out)))
    assert _visible_files(out).keys() == complete.keys()
    rerun = json.loads((out / "_manifest.json").read_text())
    assert rerun["files"] == manifest["files"]  # a re-run rewrites identical content


def test_a_kill_mid_stream_publishes_nothing_to_s3(
    claude_conn: str, control: EmulatorControl, tmp_path: Path, s3_server: str, s3_bucket: str
) -> None:
    from tests.integration.test_land_results import _objects

    batch_id = _ended_batch(control, 3000)
    staging = tmp_path / "tmp"
    staging.mkdir()
    control.inject({"endpoint": "results", "kind": "slow_stream", "delay_seconds": 0.3})
    output = f"s3://aws_default@{s3_bucket}/out/"
    _kill_mid_stream(_probe(output, batch_id, {"TMPDIR": str(staging)}), staging)
    assert _objects(s3_server, s3_bucket) == {}
    land_results(ClaudeBatchHook(), [batch_id], as_path(output))
    assert len(_objects(s3_server, s3_bucket)) == 4  # raw, results, failures, manifest


def test_an_exception_mid_stream_leaves_nothing_behind(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    batch_id = _ended_batch(control, 500)
    out = tmp_path / "out"
    control.inject({"endpoint": "results", "kind": "cut_stream", "after_lines": 200, "count": 3})
    with pytest.raises(Exception, match=r"."):
        land_results(ClaudeBatchHook(), [batch_id], as_path(str(out)))
    assert list(out.iterdir()) == []  # no final file and no staging left


def test_an_exception_mid_stream_leaves_nothing_on_s3(
    claude_conn: str, control: EmulatorControl, s3_server: str, s3_bucket: str
) -> None:
    from tests.integration.test_land_results import _objects

    batch_id = _ended_batch(control, 500)
    control.inject({"endpoint": "results", "kind": "cut_stream", "after_lines": 200, "count": 3})
    with pytest.raises(Exception, match=r"."):
        land_results(ClaudeBatchHook(), [batch_id], as_path(f"s3://aws_default@{s3_bucket}/out/"))
    assert _objects(s3_server, s3_bucket) == {}


def test_a_failed_upload_publishes_no_partial_object_and_no_manifest(
    claude_conn: str, control: EmulatorControl, s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.integration.test_land_results import _objects

    batch_id = _ended_batch(control, 500)
    real_copy = shutil.copyfileobj
    copies: list[int] = []

    def copy_then_break(source, target, length=0):  # type: ignore[no-untyped-def]
        copies.append(1)
        if len(copies) == 2:  # the second file's upload dies half-way
            target.write(source.read(1000))
            raise ConnectionResetError("upload interrupted")
        return real_copy(source, target, length)

    monkeypatch.setattr("airflow_provider_claude_batch.output.staging.shutil.copyfileobj", copy_then_break)
    with pytest.raises(ConnectionResetError):
        land_results(ClaudeBatchHook(), [batch_id], as_path(f"s3://aws_default@{s3_bucket}/out/"))
    objects = _objects(s3_server, s3_bucket)
    assert list(objects) == [f"out/raw/{batch_id}.jsonl"]  # the first file, whole; nothing partial; no manifest


def test_a_stream_that_breaks_once_is_read_again_without_duplicate_rows(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    batch_id = _ended_batch(control, 500)
    out = tmp_path / "out"
    control.inject({"endpoint": "results", "kind": "cut_stream", "after_lines": 200})
    manifest = land_results(ClaudeBatchHook(), [batch_id], as_path(str(out)))
    ids = [json.loads(line)["custom_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 500 == manifest["requests"]
    raw = (out / "raw" / f"{batch_id}.jsonl").read_bytes()
    assert raw.count(b"\n") == 500
    assert control.state()["calls"]["results"] == 2


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_results(
    claude_conn: str, control: EmulatorControl, tmp_path: Path, record_metric
) -> None:  # type: ignore[no-untyped-def]
    growth = {}
    for count in (10_000, 100_000):
        batch_id = _ended_batch(control, count, prefix=f"m{count}")
        process = _probe(str(tmp_path / f"out{count}"), batch_id)
        stdout, _ = process.communicate(timeout=600)
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["requests"] == count
        growth[count] = report["peak_growth"]
    # Flat but for the one batch's set of custom_ids that duplicates are found with (dropped after the
    # batch, bounded by the API's 100,000 requests per batch): 90,000 more IDs of this size are about 10 MB.
    id_set = 90_000 * ID_SET_BYTES_PER_REQUEST
    assert growth[100_000] - growth[10_000] < 8 * 2**20 + id_set, growth
    record_metric(
        "landing, peak RSS growth",
        f"{growth[10_000] / 1e6:.1f} MB for 10k results, {growth[100_000] / 1e6:.1f} MB for 100k results",
    )


def test_archived_results_fail_at_once_with_dates(claude_conn: str, control: EmulatorControl, tmp_path: Path) -> None:
    batch_id = _ended_batch(control, 2)
    control.advance(29 * 86400 + 60)
    with pytest.raises(ResultsArchivedError, match=rf"{batch_id} \(created .*\) were archived on .*29 days"):
        land_results(ClaudeBatchHook(), [batch_id], as_path(str(tmp_path / "out")))
    assert "results" not in control.state()["calls"]


def test_results_close_to_expiry_warn(
    claude_conn: str,
    control: EmulatorControl,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch_id = _ended_batch(control, 2)
    control.advance(27 * 86400)
    land_results(ClaudeBatchHook(), [batch_id], as_path(str(tmp_path / "out")), now=control.now)
    assert "expire on" in caplog.text + capfd.readouterr().out


def test_an_unended_batch_is_refused(claude_conn: str, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=3600)
    batch_id = ClaudeBatchHook().create_batch(make_requests(1)).id
    with pytest.raises(ClaudeBatchError, match="in_progress"):
        land_results(ClaudeBatchHook(), [batch_id], as_path(str(tmp_path / "out")))
