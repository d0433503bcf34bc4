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

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.results.pricing import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
FAILED_TYPES = ("errored", "canceled", "expired")
LONG_PROMPT_TOKENS = 100_000
# Result problems the manifest flags (their rows are landed as served, their usage is left out of
# the totals and the cost, which the manifest then marks incomplete).
UNKNOWN_RESULT_TYPE = "unknown_result_type"
SUCCEEDED_WITHOUT_USAGE = "succeeded_without_usage"
NEGATIVE_USAGE = "negative_usage"
EXAMPLES_KEPT = 5
# What a batch ID must look like before it names a file: the API's prefix, then letters, digits
# and '_' (the emulator's IDs have one), any length; never '/', '.', '%' or whitespace.
BATCH_ID_PATTERN = re.compile(r"msgbatch_[A-Za-z0-9][A-Za-z0-9_]*")


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


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None


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
class FoldedLine:
    custom_id: str
    result_type: str
    row: dict[str, Any]
    failed: bool


@dataclass
class Totals:
    """Counts and usage of everything folded so far (one batch, or all of them)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_TYPES, 0))
    error_types: dict[str, int] = field(default_factory=dict)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    # UNKNOWN_RESULT_TYPE etc. -> how many results, and the first few custom_ids.
    problems: dict[str, int] = field(default_factory=dict)
    problem_examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(self.counts[t] for t in FAILED_TYPES)

    def add(self, other: Totals) -> None:
        for kind, number in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + number
        for kind, number in other.error_types.items():
            self.error_types[kind] = self.error_types.get(kind, 0) + number
        for model, usage in other.usage_by_model.items():
            self.usage_by_model.setdefault(model, Usage()).add(usage)
        for kind, number in other.problems.items():
            self.problems[kind] = self.problems.get(kind, 0) + number
        for kind, examples in other.problem_examples.items():
            kept = self.problem_examples.setdefault(kind, [])
            kept += examples[: EXAMPLES_KEPT - len(kept)]

    def flag(self, kind: str, custom_id: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        examples = self.problem_examples.setdefault(kind, [])
        if len(examples) < EXAMPLES_KEPT:
            examples.append(custom_id)

    def usage_total(self) -> dict[str, int]:
        total = Usage()
        for usage in self.usage_by_model.values():
            total.add(usage)
        return {k: v for k, v in vars(total).items() if not k.startswith("long_prompt")}


def fold_line(line: bytes, batch_id: str, totals: Totals) -> FoldedLine:
    """One raw line to its table row, counted into `totals`."""
    rows: list[TableRow] = []
    _fold_parsed([_decode_line(line, batch_id)], batch_id, totals, rows, [])
    row = rows[0]
    return FoldedLine(row.custom_id, row.result_type, msgspec.structs.asdict(row), row.result_type in FAILED_TYPES)


@dataclass
class FoldedLines:
    """The rows of a block of lines, in order, and the failed ones among them (the same objects)."""

    rows: list[TableRow]
    failed: list[TableRow]


def fold_lines(block: bytes, batch_id: str, totals: Totals) -> FoldedLines:
    """Complete result lines (newline-separated; the last may lack its newline) to their rows, counted
    into `totals`. Blank lines are skipped; a line that is not the API's shape stops landing.
    """
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    try:
        parsed = _decoder.decode_lines(block)
    except msgspec.DecodeError:
        parsed = None
    # decode_lines is laxer than one decode per line (it passes blank lines, and takes two objects
    # on one line or one object over two): unless it found exactly one object per line, decode line
    # by line, which skips blank lines and rejects the rest with the line's own error.
    if parsed is None or len(parsed) != lines:
        parsed = [_decode_line(line, batch_id) for line in block.split(b"\n") if line.strip()]
    folded = FoldedLines([], [])
    _fold_parsed(parsed, batch_id, totals, folded.rows, folded.failed)
    return folded


def _decode_line(line: bytes, batch_id: str) -> _Line:
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise MalformedResultError(f"a result line of batch {batch_id} is not valid: {exc}") from None


def _fold_parsed(
    parsed: list[_Line], batch_id: str, totals: Totals, rows: list[TableRow], failed: list[TableRow]
) -> None:
    counts = totals.counts
    usage_by_model = totals.usage_by_model
    append = rows.append
    for line in parsed:
        result = line.result
        kind = result.type
        counts[kind] = counts.get(kind, 0) + 1
        message = result.message
        usage = message.usage if kind == "succeeded" and message is not None else None
        input_tokens = usage.input_tokens if usage is not None else None
        output_tokens = usage.output_tokens if usage is not None else None
        if message is not None and usage is not None and input_tokens is not None and output_tokens is not None:
            cache_creation = usage.cache_creation
            if cache_creation is not None:
                write_5m = cache_creation.ephemeral_5m_input_tokens or 0
                write_1h = cache_creation.ephemeral_1h_input_tokens or 0
            else:
                # No split reported: count every cache write at the 5-minute rate (an assumption).
                write_5m = usage.cache_creation_input_tokens or 0
                write_1h = 0
            read = usage.cache_read_input_tokens or 0
            content = message.content
            if len(content) == 1:  # the usual reply: one text block, no join needed
                block = content[0]
                text = block.text if block.type == "text" and block.text is not None else ""
            else:
                text = "\n".join(b.text for b in content if b.type == "text" and b.text is not None)
            model = message.model
            tools = usage.server_tool_use
            row = TableRow(
                line.custom_id,
                batch_id,
                "succeeded",
                text,
                message.stop_reason,
                model,
                message.id,
                input_tokens,
                output_tokens,
                usage.cache_creation_input_tokens or 0,
                read,
                write_5m,
                write_1h,
                (tools.web_search_requests or 0) if tools else 0,
                (tools.web_fetch_requests or 0) if tools else 0,
                usage.service_tier,
            )
            append(row)
            # One test for all five counts: the bitwise or of ints is negative when any one is.
            if (
                input_tokens | output_tokens | write_5m | write_1h | read | (usage.cache_creation_input_tokens or 0)
            ) < 0:
                totals.flag(NEGATIVE_USAGE, line.custom_id)
                continue
            model_usage = usage_by_model.get(model)
            if model_usage is None:
                model_usage = usage_by_model[model] = Usage()
            model_usage.requests += 1
            model_usage.input_tokens += input_tokens
            model_usage.output_tokens += output_tokens
            model_usage.cache_write_5m_tokens += write_5m
            model_usage.cache_write_1h_tokens += write_1h
            model_usage.cache_read_tokens += read
            if input_tokens + write_5m + write_1h + read > LONG_PROMPT_TOKENS:
                model_usage.long_prompt_input_tokens += input_tokens
                model_usage.long_prompt_output_tokens += output_tokens
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
        row = TableRow(line.custom_id, batch_id, kind, error_type=error_type, error_message=error_message)
        append(row)
        if kind in FAILED_TYPES:
            failed.append(row)


def _error_of(envelope: _ErrorEnvelope | None) -> tuple[str, str]:
    """The error type sits at result.error.error.type; some documentation reads result.error.type."""
    if envelope is None:
        return "unknown", ""
    if envelope.error is not None:
        return envelope.error.type or "unknown", envelope.error.message
    return envelope.type or "unknown", envelope.message


def encode_row(row: dict[str, Any] | TableRow) -> bytes:
    return _encoder.encode(row) + b"\n"


def encode_rows(rows: list[dict[str, Any]] | list[TableRow]) -> bytes:
    """Many rows as JSONL in one call: the same bytes as `encode_row` of each, joined."""
    return _encoder.encode_lines(rows)


def custom_ids_digest(custom_ids: Iterable[str]) -> str:
    """sha256 over the sorted custom_ids: the same for a batch's requests and its results in any order.

    Kept per batch in the submission record (64 characters however many requests), so landing can
    tell that a stream holds exactly the submitted custom_ids without keeping them.
    """
    digest = hashlib.sha256()
    for custom_id in sorted(custom_ids):
        digest.update(custom_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def valid_batch_id(batch_id: object) -> bool:
    return isinstance(batch_id, str) and BATCH_ID_PATTERN.fullmatch(batch_id) is not None


@dataclass(frozen=True)
class ExpectedResults:
    """What one batch's stream must hold: `count` results, one per submitted custom_id.

    `custom_ids_sha256` (from the submission record) or `custom_ids` (when the input is at hand)
    say which ones; with neither, only duplicates and the count can be checked.
    """

    count: int
    custom_ids_sha256: str | None = None
    custom_ids: Sequence[str] | None = None

    @property
    def checked_against(self) -> str:
        """What the manifest says each custom_id was checked against."""
        if self.custom_ids is not None:
            return "input"
        return "submission record" if self.custom_ids_sha256 is not None else "request counts"


class SeenIds:
    """The custom_ids of one batch's stream so far, duplicates noted as blocks of rows arrive.

    Memory: one set of the batch's custom_ids (at most 100,000 by the API's limit; about 10 MB
    for 64-character IDs), dropped once the batch is checked.
    """

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.results = 0
        self.duplicates: list[str] = []

    def add(self, rows: Sequence[TableRow]) -> None:
        ids = [row.custom_id for row in rows]
        self.results += len(ids)
        if not self.ids.isdisjoint(ids):
            self.duplicates += [i for i in ids if i in self.ids][:EXAMPLES_KEPT]
        before = len(self.ids)
        self.ids.update(ids)
        if len(self.ids) - before != len(ids):  # a custom_id twice within this block
            counted: dict[str, int] = {}
            for custom_id in ids:
                counted[custom_id] = counted.get(custom_id, 0) + 1
            self.duplicates += [i for i, n in counted.items() if n > 1][:EXAMPLES_KEPT]


def results_mismatch(batch_id: str, seen: SeenIds, expected: ExpectedResults) -> str | None:
    """Why the stream is not exactly one result per submitted custom_id, or None when it is."""
    distinct = len(seen.ids)
    problems = []
    if seen.results != distinct:
        problems.append(f"{seen.results - distinct} duplicated (e.g. {_examples(seen.duplicates)})")
    missing: list[str] = []
    unknown: list[str] = []
    if expected.custom_ids is not None:
        missing = [c for c in expected.custom_ids if c not in seen.ids]
        if missing or distinct != len(expected.custom_ids):
            unknown = sorted(seen.ids.difference(expected.custom_ids))
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {_examples(missing)})")
    elif distinct < expected.count:
        problems.append(f"{expected.count - distinct} missing")
    if unknown:
        problems.append(f"{len(unknown)} not submitted in this batch (e.g. {_examples(unknown)})")
    elif distinct > expected.count:
        problems.append(f"{distinct - expected.count} more custom_ids than requests")
    if (
        not problems
        and expected.custom_ids is None
        and expected.custom_ids_sha256 is not None
        and custom_ids_digest(seen.ids) != expected.custom_ids_sha256
    ):
        problems.append("the custom_ids are not the submitted ones (their sha256 differs from the submission record's)")
    if not problems:
        return None
    return (
        f"the results of batch {batch_id} do not match what was submitted: {expected.count} requests, "
        f"{seen.results} results for {distinct} distinct custom_ids; " + "; ".join(problems)
    )


def _examples(custom_ids: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in list(dict.fromkeys(custom_ids))[:EXAMPLES_KEPT])
