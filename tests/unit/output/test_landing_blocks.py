"""Landing reads the results stream in chunks cut anywhere: the files are the same bytes as folding
one line at a time, whatever the chunks, and a stream that breaks is read again without a trace."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchRequestCounts

from airflow_provider_claude_batch.output.land import LandingSettings, land_results
from airflow_provider_claude_batch.output.staging import WRITEBACK_BYTES
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS, MalformedResultError, encode_row
from airflow_provider_claude_batch.results.totals import Totals
from airflow_provider_claude_batch.storage import as_path
from tests.helpers import fold_line

CREATED = datetime(2026, 11, 1, tzinfo=UTC)


def _result(custom_id: str, i: int) -> bytes:
    if i % 5 == 1:
        result: dict[str, object] = {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "overloaded_error", "message": f"busy é {i}"}},
        }
    elif i % 5 == 2:
        result = {"type": "expired"}
    elif i % 5 == 3:
        result = {"type": "canceled"}
    else:
        result = {
            "type": "succeeded",
            "message": {
                "id": f"msg_{i}",
                "model": "claude-sonnet-5-5",
                "stop_reason": "end_turn",
                "content": [{"type": "text", "text": f'reply \u2603 "{i}"\n' + "x" * (i * 37 % 300)}],
                "usage": {
                    "input_tokens": i,
                    "output_tokens": 2 * i,
                    "cache_read_input_tokens": 1,
                    "service_tier": "batch",
                },
            },
        }
    return json.dumps({"custom_id": custom_id, "result": result}, ensure_ascii=False).encode()


def _served(prefix: str, count: int, *, final_newline: bool = True) -> bytes:
    body = b"\n".join(_result(f"{prefix}-{i}", i) for i in range(count))
    return body + b"\n" if final_newline else body


def _cut(body: bytes, sizes: list[int]) -> list[bytes]:
    """The body in chunks of the given sizes, cycling (so cuts fall mid-line, mid-character, anywhere)."""
    chunks, start, index = [], 0, 0
    while start < len(body):
        size = sizes[index % len(sizes)]
        chunks.append(body[start : start + size])
        start += size
        index += 1
    return chunks


class _Broken:
    """A stream that serves some chunks, then fails as a dropped connection would."""

    def __init__(self, chunks: list[bytes], error: Exception) -> None:
        self.chunks, self.error = chunks, error


class _Response:
    def __init__(self, served: list[bytes] | _Broken) -> None:
        self.served = served

    def iter_bytes(self, _size: int) -> Iterator[bytes]:
        if isinstance(self.served, _Broken):
            yield from self.served.chunks
            raise self.served.error
        yield from self.served


class _Hook:
    """The two hook calls landing makes, serving each batch's attempts in order."""

    def __init__(self, attempts: dict[str, list[list[bytes] | _Broken]], counts: dict[str, int]) -> None:
        self.attempts, self.counts = attempts, counts
        self.opened: list[str] = []

    def retrieve_batch(self, batch_id: str) -> MessageBatch:
        return MessageBatch(
            id=batch_id,
            type="message_batch",
            processing_status="ended",
            created_at=CREATED,
            ended_at=CREATED,
            expires_at=CREATED,
            archived_at=None,
            cancel_initiated_at=None,
            results_url=f"https://x/{batch_id}",
            request_counts=MessageBatchRequestCounts(
                processing=0, succeeded=self.counts[batch_id], errored=0, canceled=0, expired=0
            ),
        )

    @contextmanager
    def open_results(self, batch: MessageBatch) -> Iterator[_Response]:
        self.opened.append(batch.id)
        yield _Response(self.attempts[batch.id].pop(0))


def _land(hook: _Hook, batch_ids: list[str], out: Path, formats: tuple[str, ...] = ("jsonl", "csv")) -> dict:
    return land_results(
        hook,
        batch_ids,
        as_path(str(out)),
        LandingSettings(formats=formats),  # type: ignore[arg-type]
        now=lambda: CREATED.timestamp() + 60,
    )


def _expected_tables(bodies: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """The files as landing wrote them one line at a time: one decode, one dict row, one encode each."""
    rows = [
        fold_line(line, batch_id, Totals()) for batch_id, body in bodies for line in body.split(b"\n") if line.strip()
    ]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(f.row for f in rows)
    return {
        "results.jsonl": b"".join(encode_row(f.row) for f in rows),
        "failures.jsonl": b"".join(encode_row(f.row) for f in rows if f.failed),
        "results.csv": text.getvalue().encode(),
    }


def _assert_manifest_describes_the_files(manifest: dict, out: Path) -> None:
    for info in manifest["files"]:
        data = (out / info["name"]).read_bytes()
        assert (info["bytes"], info["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), info["name"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {"raw", "_manifest.json"} | {f["name"] for f in manifest["files"] if "/" not in f["name"]}
    )


@pytest.mark.parametrize(
    "sizes",
    [
        [7],
        [1],
        [1 << 18],
        [3, 1000, 1, 4096, 250],
        [len(b'{"custom_id"')],
    ],
)
@pytest.mark.parametrize("final_newline", [True, False])
def test_lines_cut_anywhere_by_the_chunks_land_as_one_line_at_a_time(
    sizes: list[int], final_newline: bool, tmp_path: Path
) -> None:
    body = _served("r", 300, final_newline=final_newline)
    hook = _Hook({"msgbatch_b1": [_cut(body, sizes)]}, {"msgbatch_b1": 300})
    manifest = _land(hook, ["msgbatch_b1"], tmp_path)
    assert (tmp_path / "raw" / "msgbatch_b1.jsonl").read_bytes() == body
    for name, expected in _expected_tables([("msgbatch_b1", body)]).items():
        assert (tmp_path / name).read_bytes() == expected, name
    assert manifest["requests"] == 300
    assert manifest["counts"] == {"succeeded": 120, "errored": 60, "canceled": 60, "expired": 60}
    _assert_manifest_describes_the_files(manifest, tmp_path)


def test_a_line_longer_than_many_chunks_and_blank_lines_land_like_before(tmp_path: Path) -> None:
    long = _result("long", 0).replace(b"reply", b"reply " + b"y" * 5000)
    body = b"\n" + _served("a", 3) + b"\r\n\n" + long + b"\n  \n" + _served("b", 2, final_newline=False)
    hook = _Hook({"msgbatch_b1": [_cut(body, [100])]}, {"msgbatch_b1": 6})
    manifest = _land(hook, ["msgbatch_b1"], tmp_path)
    assert (tmp_path / "raw" / "msgbatch_b1.jsonl").read_bytes() == body
    for name, expected in _expected_tables([("msgbatch_b1", body)]).items():
        assert (tmp_path / name).read_bytes() == expected, name
    _assert_manifest_describes_the_files(manifest, tmp_path)


def test_a_later_batch_that_breaks_midway_is_read_again_and_every_row_lands_once(tmp_path: Path) -> None:
    first, second = _served("one", 200), _served("two", 500)
    broken = _Broken(_cut(second, [999])[:10], httpx2.RemoteProtocolError("peer closed connection"))
    short = _cut(b"".join(second.splitlines(keepends=True)[:400]), [4096])  # ends early: 400 lines of 500
    hook = _Hook(
        {"msgbatch_b1": [_cut(first, [1000])], "msgbatch_b2": [broken, short, _cut(second, [5000])]},
        {"msgbatch_b1": 200, "msgbatch_b2": 500},
    )
    manifest = _land(hook, ["msgbatch_b1", "msgbatch_b2"], tmp_path, formats=("jsonl", "csv", "parquet"))
    assert hook.opened == ["msgbatch_b1", "msgbatch_b2", "msgbatch_b2", "msgbatch_b2"]
    for name, expected in _expected_tables([("msgbatch_b1", first), ("msgbatch_b2", second)]).items():
        assert (tmp_path / name).read_bytes() == expected, name
    assert (tmp_path / "raw" / "msgbatch_b2.jsonl").read_bytes() == second
    assert manifest["requests"] == 700
    assert next(f for f in manifest["files"] if f["name"] == "results.parquet")["rows"] == 700
    _assert_manifest_describes_the_files(manifest, tmp_path)


def test_a_stream_that_keeps_breaking_fails_and_leaves_nothing(tmp_path: Path) -> None:
    body = _served("r", 50)
    breaks = [_Broken(_cut(body, [500])[:2], httpx2.ReadError("reset")) for _ in range(3)]
    hook = _Hook({"msgbatch_b1": breaks}, {"msgbatch_b1": 50})
    with pytest.raises(httpx2.ReadError):
        _land(hook, ["msgbatch_b1"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_error_that_reading_again_cannot_fix_is_raised_at_once(tmp_path: Path) -> None:
    hook = _Hook({"msgbatch_b1": [_Broken([b'{"custom'], PermissionError("denied"))]}, {"msgbatch_b1": 1})
    with pytest.raises(PermissionError):
        _land(hook, ["msgbatch_b1"], tmp_path)
    assert hook.opened == ["msgbatch_b1"]
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_line_stops_landing_and_the_receiving_thread(tmp_path: Path) -> None:
    body = _served("r", 20) + b'{"custom_id": "x"}\n' + _served("s", 2000)
    hook = _Hook({"msgbatch_b1": [_cut(body, [300])]}, {"msgbatch_b1": 2021})
    with pytest.raises(MalformedResultError, match="msgbatch_b1"):
        _land(hook, ["msgbatch_b1"], tmp_path)
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 5
    while any(t.name.startswith("results-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name.startswith("results-") for t in threading.enumerate())


def test_files_past_the_writeback_size_and_a_rollback_across_it_land_the_same_bytes(tmp_path: Path) -> None:
    # Each table file passes WRITEBACK_BYTES (handed to the disk as written) before the second batch
    # breaks, and the rollback takes the files back to a point before the last hand-over.
    first, second = _served("one", 40_000), _served("two", 40_000)
    assert min(len(first), len(second)) > WRITEBACK_BYTES
    broken = _Broken(_cut(second, [1 << 16])[: len(second) * 3 // 4 >> 16], httpx2.ReadError("reset"))
    hook = _Hook(
        {"msgbatch_b1": [_cut(first, [1 << 16])], "msgbatch_b2": [broken, _cut(second, [1 << 16, 4093])]},
        {"msgbatch_b1": 40_000, "msgbatch_b2": 40_000},
    )
    manifest = _land(hook, ["msgbatch_b1", "msgbatch_b2"], tmp_path, formats=("jsonl",))
    assert hook.opened == ["msgbatch_b1", "msgbatch_b2", "msgbatch_b2"]
    assert (tmp_path / "raw" / "msgbatch_b1.jsonl").read_bytes() == first
    assert (tmp_path / "raw" / "msgbatch_b2.jsonl").read_bytes() == second
    expected = _expected_tables([("msgbatch_b1", first), ("msgbatch_b2", second)])
    for name in ("results.jsonl", "failures.jsonl"):
        assert (tmp_path / name).read_bytes() == expected[name], name
    assert manifest["requests"] == 80_000
    _assert_manifest_describes_the_files(manifest, tmp_path)
