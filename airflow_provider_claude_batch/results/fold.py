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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.results.pricing import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from airflow_provider_claude_batch.results.structured import OutputCheck

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
FAILED_TYPES = ("errored", "canceled", "expired")
LONG_PROMPT_TOKENS = 100_000
# Result problems the manifest flags (their rows are landed as served, their usage is left out of
# the totals and the cost, which the manifest then marks incomplete).
UNKNOWN_RESULT_TYPE = "unknown_result_type"
SUCCEEDED_WITHOUT_USAGE = "succeeded_without_usage"
NEGATIVE_USAGE = "negative_usage"
EXAMPLES_KEPT = 5
# Bytes of lines decoded and folded at a time: their objects stay in the CPU's cache until encoded.
FOLD_BLOCK_BYTES = 1 << 16
# The error_type of a succeeded result whose output does not validate against the output_type: a failure.
INVALID_OUTPUT = "invalid_output"


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
class Totals:
    """Counts and usage of everything folded so far (one batch, or all of them)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_TYPES, 0))
    error_types: dict[str, int] = field(default_factory=dict)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    # UNKNOWN_RESULT_TYPE etc. -> how many results, and the first few custom_ids.
    problems: dict[str, int] = field(default_factory=dict)
    problem_examples: dict[str, list[str]] = field(default_factory=dict)
    # With an output_type: succeeded results whose output validated (those that did not are
    # error_types["invalid_output"]).
    validated: int = 0

    @property
    def requests(self) -> int:
        """Results folded so far, of every type."""
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        """Results that did not succeed (errored, canceled, expired) or whose output did not validate."""
        return sum(self.counts[t] for t in FAILED_TYPES) + self.error_types.get(INVALID_OUTPUT, 0)

    def add(self, other: Totals) -> None:
        """Count `other` (another batch's totals) into these."""
        for kind, number in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + number
        for kind, number in other.error_types.items():
            self.error_types[kind] = self.error_types.get(kind, 0) + number
        for model, usage in other.usage_by_model.items():
            self.usage_by_model.setdefault(model, Usage()).add(usage)
        self.validated += other.validated
        for kind, number in other.problems.items():
            self.problems[kind] = self.problems.get(kind, 0) + number
        for kind, examples in other.problem_examples.items():
            kept = self.problem_examples.setdefault(kind, [])
            kept += examples[: EXAMPLES_KEPT - len(kept)]

    def flag(self, kind: str, custom_id: str) -> None:
        """Note a result problem of `kind`, keeping the first few custom_ids as examples."""
        self.problems[kind] = self.problems.get(kind, 0) + 1
        examples = self.problem_examples.setdefault(kind, [])
        if len(examples) < EXAMPLES_KEPT:
            examples.append(custom_id)

    def usage_total(self) -> dict[str, int]:
        """Token counts over every model, as the manifest's `usage_total`."""
        total = Usage()
        for usage in self.usage_by_model.values():
            total.add(usage)
        return total.reported()


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
    """
    counts = totals.counts
    append = rows.append
    for line in parsed:
        result = line.result
        kind = result.type
        counts[kind] = counts.get(kind, 0) + 1
        message = result.message
        usage = message.usage if kind == "succeeded" and message is not None else None
        if (
            message is not None
            and usage is not None
            and usage.input_tokens is not None
            and usage.output_tokens is not None
        ):
            append(_succeeded_row(line.custom_id, batch_id, message, usage, totals, row_type))
            continue
        error_type: str | None = None
        error_message: str | None = None
        if kind == "succeeded":  # without a message or its usage: nothing to count, never a silent zero
            totals.flag(SUCCEEDED_WITHOUT_USAGE, line.custom_id)
        elif kind not in RESULT_TYPES:
            totals.flag(UNKNOWN_RESULT_TYPE, line.custom_id)
        elif kind == "errored":
            error_type, error_message = _error_of(result.error)
            totals.error_types[error_type] = totals.error_types.get(error_type, 0) + 1
        row = row_type(line.custom_id, batch_id, kind, error_type=error_type, error_message=error_message)
        append(row)
        if kind in FAILED_TYPES:
            failed.append(row)


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


def _succeeded_row(
    custom_id: str, batch_id: str, message: _Message, usage: _Usage, totals: Totals, row_type: type[TableRow]
) -> TableRow:
    """A succeeded result's row (its usage reported in full), its usage counted into `totals`."""
    input_tokens = usage.input_tokens or 0  # (never None here: checked by the caller)
    output_tokens = usage.output_tokens or 0
    cache_created = usage.cache_creation_input_tokens or 0
    cache_read = usage.cache_read_input_tokens or 0
    cache_creation = usage.cache_creation
    if cache_creation is not None:
        write_5m = cache_creation.ephemeral_5m_input_tokens or 0
        write_1h = cache_creation.ephemeral_1h_input_tokens or 0
    else:
        # No split reported: count every cache write at the 5-minute rate (an assumption).
        write_5m = cache_created
        write_1h = 0
    content = message.content
    if len(content) == 1:  # the usual reply: one text block, no join needed
        block = content[0]
        text = block.text if block.type == "text" and block.text is not None else ""
    else:
        text = "\n".join(b.text for b in content if b.type == "text" and b.text is not None)
    tools = usage.server_tool_use
    model = message.model
    # One test for all six counts: the bitwise or of ints is negative when any one is.
    if (input_tokens | output_tokens | write_5m | write_1h | cache_read | cache_created) < 0:
        totals.flag(NEGATIVE_USAGE, custom_id)
    else:
        _count_usage(totals, model, input_tokens, output_tokens, write_5m, write_1h, cache_read)
    return row_type(
        custom_id,
        batch_id,
        "succeeded",
        text,
        message.stop_reason,
        model,
        message.id,
        input_tokens,
        output_tokens,
        cache_created,
        cache_read,
        write_5m,
        write_1h,
        (tools.web_search_requests or 0) if tools else 0,
        (tools.web_fetch_requests or 0) if tools else 0,
        usage.service_tier,
    )


def _count_usage(
    totals: Totals, model: str, input_tokens: int, output_tokens: int, write_5m: int, write_1h: int, read: int
) -> None:
    """Count a succeeded result's tokens (none negative) into its model's usage."""
    usage = totals.usage_by_model.get(model)
    if usage is None:
        usage = totals.usage_by_model[model] = Usage()
    usage.requests += 1
    usage.input_tokens += input_tokens
    usage.output_tokens += output_tokens
    if read or write_5m or write_1h:
        usage.cache_write_5m_tokens += write_5m
        usage.cache_write_1h_tokens += write_1h
        usage.cache_read_tokens += read
        usage.cache_requests += 1
        usage.cache_read_requests += read > 0
    if input_tokens + write_5m + write_1h + read > LONG_PROMPT_TOKENS:
        usage.long_prompt_input_tokens += input_tokens
        usage.long_prompt_output_tokens += output_tokens


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
