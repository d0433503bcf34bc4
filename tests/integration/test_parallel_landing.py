"""Issue 18, point 3: several batches' results read at once (`LandingPolicy(concurrency=...)`) land the
same files as one after the other; a broken download is read again; nothing is left behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.output.land import LandingSettings, land_results
from airflow_provider_claude_batch.storage import as_path
from tests.helpers import make_requests


def _batches(control: EmulatorControl, count: int, size: int) -> list[str]:
    control.configure(processing_seconds=0)
    hook = ClaudeBatchHook()
    ids = []
    for number in range(count):
        body = [
            {**r, "params": {**r["params"], "model": "claude-sonnet-5-5", "max_tokens": 16}}  # type: ignore[dict-item]
            for r in make_requests(size, f"b{number}")
        ]
        ids.append(hook.create_batch(body).id)
    return ids


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "_manifest.json"
    }


def test_batches_read_at_once_land_the_same_files_and_survive_a_broken_download(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    ids = _batches(control, 5, 300)
    formats = ("jsonl", "csv")
    one_by_one = land_results(ClaudeBatchHook(), ids, as_path(str(tmp_path / "one")), LandingSettings(formats))
    at_once = land_results(
        ClaudeBatchHook(), ids, as_path(str(tmp_path / "four")), LandingSettings(formats, concurrency=4)
    )
    assert _files(tmp_path / "four") == _files(tmp_path / "one"), (_files(tmp_path / "four"), _files(tmp_path / "one"))
    assert len(_files(tmp_path / "one")) == 8  # five raw files, the table in two formats, the failures
    for key in ("requests", "counts", "batches", "files"):
        assert at_once[key] == one_by_one[key], key
    assert not list((tmp_path / "four").glob(".*"))  # no staging or prefetched file left

    control.inject({"endpoint": "results", "kind": "cut_stream", "after_lines": 50, "count": 3})
    again = land_results(
        ClaudeBatchHook(), ids, as_path(str(tmp_path / "cut")), LandingSettings(formats, concurrency=3)
    )
    assert _files(tmp_path / "cut") == _files(tmp_path / "one")
    assert json.loads((tmp_path / "cut" / "_manifest.json").read_text())["counts"] == again["counts"]
    assert not list((tmp_path / "cut").glob(".*"))


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_batches_landed_at_once(
    claude_conn: str, control: EmulatorControl, tmp_path: Path, record_metric: Callable[[str, str], None]
) -> None:
    ids = _batches(control, 12, 5_000)
    growth = {}
    for count in (2, 12):
        done = subprocess.run(
            [sys.executable, "-m", "tests.landing_probe", str(tmp_path / f"out{count}"), *ids[:count]],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "CLAUDE_BATCH_PROBE_CONCURRENCY": "4"},
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["requests"] == count * 5_000
        growth[count] = report["peak_growth"]
    # Six times the batches and results (25 MB more of them), about the same memory.
    assert growth[12] - growth[2] < 8 * 2**20, growth
    record_metric(
        "landing 4 batches at once, peak RSS growth",
        f"{growth[2] / 1e6:.1f} MB for 2 batches (10k results), {growth[12] / 1e6:.1f} MB for 12 (60k results)",
    )


def test_a_rerun_after_a_failed_landing_reads_only_the_batches_not_read_in_full(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    import pytest

    from airflow_provider_claude_batch.results.checks import ExpectedResults
    from airflow_provider_claude_batch.results.stream import IncompleteResults

    ids = _batches(control, 3, 200)
    out = tmp_path / "out"
    wrong = {ids[2]: ExpectedResults(201)}  # the third batch's stream never holds what is expected
    with pytest.raises(IncompleteResults):
        land_results(ClaudeBatchHook(), ids, as_path(str(out)), LandingSettings(concurrency=2), expected=wrong)
    assert not (out / "_manifest.json").exists() and not list(out.glob("results*"))  # nothing published
    read_before = control.state(custom_ids=False)["calls"]["results"]
    manifest = land_results(ClaudeBatchHook(), ids, as_path(str(out)), LandingSettings(concurrency=2))
    assert control.state(custom_ids=False)["calls"]["results"] == read_before + 1  # only the third batch again
    assert manifest["requests"] == manifest["counts"]["succeeded"] == 600
    assert _files(out) == {name: digest for name, digest in _files(_land_fresh(ids, tmp_path / "fresh")).items()}
    assert not list(out.glob(".*"))  # the kept copies removed once published


def _land_fresh(ids: list[str], folder: Path) -> Path:
    land_results(ClaudeBatchHook(), ids, as_path(str(folder)))
    return folder
