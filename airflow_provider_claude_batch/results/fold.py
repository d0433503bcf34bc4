"""Fold raw result lines into a flat table row, a failure row and running totals: pure and fast.

Each line is decoded into small msgspec structs that read only the fields the table needs (unknown
fields are passed over, so new API fields never break landing); the raw line itself is kept
elsewhere, byte for byte.

This runs once per result (100,000 per batch), so it is written for speed: a block of complete lines
is decoded in one msgspec call, rows are structs (one allocation, encoded like the dict of the same
columns), and every struct here is left out of the garbage collector (`gc=False`: they hold only
strings, numbers and each other, so they can never form a cycle). Tracked allocations are what make
Python's collector run, and in a task process a full collection walks every object Airflow loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.results.pricing import Usage
from airflow_provider_claude_batch.results.totals import (
    FAILED_TYPES,
    INVALID_OUTPUT,
    LONG_PROMPT_TOKENS,
    NEGATIVE_USAGE,
    RESULT_TYPES,
    SUCCEEDED_WITHOUT_USAGE,
    UNKNOWN_RESULT_TYPE,
    Totals,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from airflow_provider_claude_batch.results.structured import OutputCheck

# Bytes of lines decoded and folded at a time: their objects stay in the CPU's cache until encoded.
FOLD_BLOCK_BYTES = 1 << 16


class TableRow(msgspec.Struct, gc=False):
    """One row of the flat table. Field order is column order: a row encodes to the same JSON as
    the dict of its columns.
    """

    custom_id: str
    batch_id: str
    result_type: str
    text: str | None = None
    stop_reason: str | None = None
    model: str | None = None
    message_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None
    service_tier: str | None = None
    error_type: str | None = None
    error_message: str | None = None


TABLE_COLUMNS: tuple[str, ...] = TableRow.__struct_fields__


class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(msgspec.Struct, gc=False):
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None
    service_tier: str | None = None


_NO_INPUT = msgspec.Raw(b"")


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None
    input: msgspec.Raw = _NO_INPUT  # a tool_use block's input, kept as its JSON bytes


class _Message(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    content: list[_Block] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ErrorObject(msgspec.Struct, gc=False):
    type: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct, gc=False):
    type: str = ""
    message: str = ""
    error: _ErrorObject | None = None


class _Result(msgspec.Struct, gc=False):
    type: str
    message: _Message | None = None
    error: _ErrorEnvelope | None = None


class _Line(msgspec.Struct, gc=False):
    custom_id: str
    result: _Result


_decoder = msgspec.json.Decoder(_Line)
_encoder = msgspec.json.Encoder()


class MalformedResultError(ValueError):
    """A results line that is not the API's shape: landing stops rather than guess."""


@dataclass
class FoldedLines:
    """The rows of a block of lines, in order, and the failed ones among them (the same objects)."""

    rows: list[TableRow]
    failed: list[TableRow]


def fold_lines(block: bytes, batch_id: str, totals: Totals, output: OutputCheck | None = None) -> FoldedLines:
    """Complete result lines (newline-separated; the last may lack its newline) to their rows, counted
    into `totals`. Blank lines are skipped; a line that is not the API's shape stops landing. With
    `output`, each succeeded result's output is validated and its row gets the typed columns.
    """
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    return _fold_block(block, lines, batch_id, totals, output)


def fold_chunks(
    chunks: Iterable[bytes], batch_id: str, totals: Totals, output: OutputCheck | None = None
) -> Iterator[FoldedLines]:
    """The rows of a stream received in chunks cut anywhere: each chunk's complete lines are folded in
    blocks of about FOLD_BLOCK_BYTES, and a line cut by a chunk's end waits for the rest of it.
    """
    pending = b""
    for chunk in chunks:
        end = chunk.rfind(b"\n") + 1
        if not end:
            pending += chunk
            continue
        if pending:  # the line cut by the last chunk's end, completed (one copy of this chunk's lines)
            chunk, end = pending + chunk, len(pending) + end
        yield from _fold_complete_lines(chunk, end, batch_id, totals, output)
        pending = chunk[end:]
    if pending.strip():
        yield fold_lines(pending, batch_id, totals, output)


def _fold_complete_lines(
    chunk: bytes, end: int, batch_id: str, totals: Totals, output: OutputCheck | None
) -> Iterator[FoldedLines]:
    """`chunk[:end]` (whole lines) in blocks that end at a line's end, each read in place (no copy)."""
    view = memoryview(chunk)
    start = 0
    while start < end:
        stop = chunk.rfind(b"\n", start, start + FOLD_BLOCK_BYTES) + 1
        if stop <= start:  # one line longer than a block
            stop = chunk.index(b"\n", start) + 1
        yield _fold_block(view[start:stop], chunk.count(b"\n", start, stop), batch_id, totals, output)
        start = stop


def _fold_block(
    block: bytes | memoryview, lines: int, batch_id: str, totals: Totals, output: OutputCheck | None
) -> FoldedLines:
    """`fold_lines` of a block holding `lines` newline-separated lines."""
    try:
        parsed = _decoder.decode_lines(block)
    except msgspec.DecodeError:
        parsed = None
    # decode_lines is laxer than one decode per line (it passes blank lines, and takes two objects
    # on one line or one object over two): unless it found exactly one object per line, decode line
    # by line, which skips blank lines and rejects the rest with the line's own error.
    if parsed is None or len(parsed) != lines:
        parsed = [_decode_line(line, batch_id) for line in bytes(block).split(b"\n") if line.strip()]
    folded = FoldedLines([], [])
    if output is None:
        _fold_parsed(parsed, batch_id, totals, folded.rows, folded.failed)
    else:
        _fold_structured(parsed, batch_id, totals, folded, output)
    return folded


def _decode_line(line: bytes, batch_id: str) -> _Line:
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise MalformedResultError(f"a result line of batch {batch_id} is not valid: {exc}") from None


def _fold_parsed(
    parsed: list[_Line],
    batch_id: str,
    totals: Totals,
    rows: list[TableRow],
    failed: list[TableRow],
    row_type: type[TableRow] = TableRow,
) -> None:
    """Each parsed line to its row (in `rows`, and in `failed` too if it failed), counted into `totals`.

    `row_type`: TableRow, or a subclass of it with an output_type's columns (left empty here).
    The usual result (succeeded, with its usage) is handled inline, its tokens counted straight into its
    model's usage, looked up only when the model changes: this loop runs once per result.
    """
    append = rows.append
    succeeded = 0
    model_usage, usage_model = Usage(), None  # (replaced at the first succeeded result: no model is None)
    for line in parsed:
        result = line.result
        message = result.message
        if (
            message is not None
            and (usage := message.usage) is not None
            and result.type == "succeeded"
            and (input_tokens := usage.input_tokens) is not None
            and (output_tokens := usage.output_tokens) is not None
        ):
            created = usage.cache_creation_input_tokens or 0
            read = usage.cache_read_input_tokens or 0
            split = usage.cache_creation
            if split is not None:
                write_5m = split.ephemeral_5m_input_tokens or 0
                write_1h = split.ephemeral_1h_input_tokens or 0
            else:  # no split reported: every cache write counted at the 5-minute rate (an assumption)
                write_5m, write_1h = created, 0
            content = message.content
            if len(content) == 1:  # the usual reply: one text block, no join needed
                block = content[0]
                text = block.text if block.type == "text" and block.text is not None else ""
            else:
                text = "\n".join(b.text for b in content if b.type == "text" and b.text is not None)
            model = message.model
            succeeded += 1
            # One test for all six counts: the bitwise or of ints is negative when any one is.
            if (input_tokens | output_tokens | write_5m | write_1h | read | created) < 0:
                totals.flag(NEGATIVE_USAGE, line.custom_id)
            else:
                if model != usage_model:
                    model_usage, usage_model = totals.usage_of(model), model
                model_usage.requests += 1
                model_usage.input_tokens += input_tokens
                model_usage.output_tokens += output_tokens
                if read or write_5m or write_1h:
                    model_usage.cache_write_5m_tokens += write_5m
                    model_usage.cache_write_1h_tokens += write_1h
                    model_usage.cache_read_tokens += read
                    model_usage.cache_requests += 1
                    model_usage.cache_read_requests += read > 0
                if input_tokens + write_5m + write_1h + read > LONG_PROMPT_TOKENS:
                    model_usage.long_prompt_input_tokens += input_tokens
                    model_usage.long_prompt_output_tokens += output_tokens
            tools = usage.server_tool_use
            append(
                row_type(
                    line.custom_id,
                    batch_id,
                    "succeeded",
                    text,
                    message.stop_reason,
                    model,
                    message.id,
                    input_tokens,
                    output_tokens,
                    created,
                    read,
                    write_5m,
                    write_1h,
                    (tools.web_search_requests or 0) if tools else 0,
                    (tools.web_fetch_requests or 0) if tools else 0,
                    usage.service_tier,
                )
            )
        else:
            row = _other_row(line, batch_id, totals, row_type)
            append(row)
            if row.result_type in FAILED_TYPES:
                failed.append(row)
    if succeeded:
        totals.counts["succeeded"] = totals.counts.get("succeeded", 0) + succeeded


def _other_row(line: _Line, batch_id: str, totals: Totals, row_type: type[TableRow]) -> TableRow:
    """The row of a result that is not a succeeded one with its usage, counted into `totals`."""
    result = line.result
    kind = result.type
    totals.counts[kind] = totals.counts.get(kind, 0) + 1
    error_type: str | None = None
    error_message: str | None = None
    if kind == "succeeded":  # without a message or its usage: nothing to count, never a silent zero
        totals.flag(SUCCEEDED_WITHOUT_USAGE, line.custom_id)
    elif kind not in RESULT_TYPES:
        totals.flag(UNKNOWN_RESULT_TYPE, line.custom_id)
    elif kind == "errored":
        error_type, error_message = _error_of(result.error)
        totals.error_types[error_type] = totals.error_types.get(error_type, 0) + 1
    return row_type(line.custom_id, batch_id, kind, error_type=error_type, error_message=error_message)


def _fold_structured(
    parsed: list[_Line], batch_id: str, totals: Totals, folded: FoldedLines, output: OutputCheck
) -> None:
    """`_fold_parsed` into rows with the output's columns, then each counted succeeded row checked by
    `output`: its typed columns filled, or it becomes an invalid_output failure.
    """
    _fold_parsed(parsed, batch_id, totals, folded.rows, folded.failed, output.row_type)
    check = output.check
    validated = invalid = 0
    for line, row in zip(parsed, folded.rows, strict=True):
        message = line.result.message
        if row.input_tokens is None or message is None:  # failed, or succeeded without usage: nothing to check
            continue
        content = message.content
        if len(content) == 1 and content[0].type == "text":  # the native form's usual reply
            valid = check(row, row.text)
        else:
            valid = check(row, _output_of(content, row.text))
        if valid:
            validated += 1
        else:
            invalid += 1
            folded.failed.append(row)
    totals.validated += validated
    if invalid:
        totals.error_types[INVALID_OUTPUT] = totals.error_types.get(INVALID_OUTPUT, 0) + invalid


def _output_of(content: list[_Block], text: str | None) -> bytes | str | None:
    """The structured output of a reply: the forced tool's input if it called one, else its text (JSON)."""
    for block in content:
        if block.type == "tool_use" and block.input:
            return bytes(block.input)
    return text


def _error_of(envelope: _ErrorEnvelope | None) -> tuple[str, str]:
    """The error type sits at result.error.error.type; some documentation reads result.error.type."""
    if envelope is None:
        return "unknown", ""
    if envelope.error is not None:
        return envelope.error.type or "unknown", envelope.error.message
    return envelope.type or "unknown", envelope.message


def encode_row(row: dict[str, Any] | TableRow) -> bytes:
    """One row as a JSONL line: a TableRow and the dict of its columns give the same bytes."""
    return _encoder.encode(row) + b"\n"


def encode_rows(rows: list[dict[str, Any]] | list[TableRow]) -> bytes:
    """Many rows as JSONL in one call: the same bytes as `encode_row` of each, joined."""
    return _encoder.encode_lines(rows)
