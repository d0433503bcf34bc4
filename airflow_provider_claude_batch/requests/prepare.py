"""Validate batch requests against the schema and serialize each exactly once: pure (no threads, no files).

Requests are laid out in one growing buffer as the create body's items (`{"custom_id":..,"params":..},{...}`),
so a batch's body is a contiguous slice of it: splitting and sending copy nothing. Every problem is
collected with its line number, and the caller raises one error that names the first offenders
before anything is sent.

A request given as a Python object is encoded by msgspec and the encoding checked by the schema. A
JSONL line the schema accepts as it stands is kept as written (a block of lines per C call, nothing
built per line); any other line is decoded and takes the same road as a Python object. The
fingerprint, the sha256 of the buffer, recognises a resubmission of the same work; a `Hasher` given
to `prepare` is fed the buffer as it grows (requests/hashing.py hashes on a second thread).

Given a `Spill` factory, a large input's items go to a spill file as they grow (requests/prepared.py):
memory stays bounded by about one batch, whatever the input's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.requests import schema
from airflow_provider_claude_batch.requests.prepared import BODY_PREFIX as BODY_PREFIX
from airflow_provider_claude_batch.requests.prepared import BODY_SUFFIX as BODY_SUFFIX
from airflow_provider_claude_batch.requests.prepared import FINGERPRINT_PREFIX as FINGERPRINT_PREFIX
from airflow_provider_claude_batch.requests.prepared import Hasher as Hasher
from airflow_provider_claude_batch.requests.prepared import PreparedRequests as PreparedRequests
from airflow_provider_claude_batch.requests.prepared import Spill as Spill
from airflow_provider_claude_batch.requests.seen import SeenIds

if TYPE_CHECKING:
    from anthropic.types import TextBlockParam

SHOWN_PROBLEMS = 10

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True)
class RequestDefaults:
    """Filled into each request's params when the request does not set them."""

    model: str | None = None
    max_tokens: int | None = None
    system: str | list[TextBlockParam] | None = None

    def given(self) -> dict[str, object]:
        """The defaults that are set, in the order they are filled in."""
        return {name: value for name in ("model", "max_tokens", "system") if (value := getattr(self, name)) is not None}

    def apply(self, params: Mapping[str, object]) -> dict[str, object]:
        """`params` with each default it leaves out filled in, after its own keys."""
        merged = dict(params)
        for name, value in self.given().items():
            merged.setdefault(name, value)
        return merged


@dataclass(frozen=True)
class Problem:
    """A request that cannot be sent, named by its input line (and custom_id, when it has one)."""

    line: int
    custom_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f"custom_id {self.custom_id!r}" if self.custom_id else "no custom_id"
        return f"line {self.line} ({who}): {self.reason}"


@runtime_checkable
class JsonlSource(Protocol):
    """A JSONL input not yet decoded (input/jsonl.py's `JsonlEntries`): prepared from its bytes."""

    def blocks(self) -> Iterator[bytes] | None:
        """Complete lines a block at a time, joined by their newlines; None if the input came as lines."""

    def lines(self) -> Iterable[bytes]:
        """The input's lines (each with or without its newline), when `blocks()` is None."""


def prepare(
    entries: Iterable[tuple[int, object]] | JsonlSource,
    defaults: RequestDefaults = RequestDefaults(),
    *,
    max_body_bytes: int = API_MAX_BODY_BYTES,
    hasher: Hasher | None = None,
    spill: Callable[[], Spill] | None = None,
    spill_above: int = API_MAX_BODY_BYTES,
    spill_above_requests: int = API_MAX_REQUESTS,
) -> tuple[PreparedRequests, list[Problem], int]:
    """Validate and serialize `(line number, request)` pairs, or a `JsonlSource`'s lines numbered from 1.

    Returns the prepared requests, the first problems found, and how many requests were bad in all.
    An entry may already be a `Problem` (e.g. a line that was not JSON). Either form of the same
    input gives the same problems, the same bytes and the same fingerprint. With `spill`, once the items
    are more than `spill_above` bytes or `spill_above_requests` requests (more than one batch), they are
    kept in the file it opens instead of memory.
    """
    preparer = _Preparer(defaults, max_body_bytes, hasher, PreparedRequests(spill, spill_above, spill_above_requests))
    if isinstance(entries, JsonlSource):
        preparer.add_jsonl(entries)
    else:
        for line, entry in entries:
            preparer.add(line, entry)
    return preparer.finish()


class _Preparer:
    """One `prepare` call: what is kept, what was wrong, and where each custom_id was first seen."""

    def __init__(
        self, defaults: RequestDefaults, max_body_bytes: int, hasher: Hasher | None, prepared: PreparedRequests
    ) -> None:
        self.defaults = defaults
        self.prepared = prepared
        prepared._hasher = hasher
        self.problems: list[Problem] = []
        self.bad = 0
        self.unkept = 0  # good requests after the first bad one (counted, not kept)
        # Every custom_id seen (no line number per request held; `_first_line` finds it when shown).
        self.seen = SeenIds()
        self.unkept_lines: dict[str, int] = {}  # the line of each good request not kept (after a bad one)
        self.item_limit = max_body_bytes - len(BODY_PREFIX) - len(BODY_SUFFIX)
        self.number = 0  # the JSONL line last read
        # A line decoded from JSON encodes back to the same JSON, unless a default filled in cannot
        self.decoded_json_is_json = schema.not_json_reason(defaults.given(), "") is None

    def finish(self) -> tuple[PreparedRequests, list[Problem], int]:
        prepared = self.prepared
        prepared.requests_read = len(prepared) + self.unkept + self.bad
        prepared._finish(hashed=not self.bad)
        self.seen.close()
        if self.bad:  # nothing will be sent
            prepared.close()
        return prepared, self.problems, self.bad

    def add(self, line: int, entry: object, *, decoded_json: bool = False) -> None:
        """One request: encoded, checked by the schema, and kept or named as a problem."""
        result = (
            entry
            if isinstance(entry, Problem)
            else _encoded_request(line, entry, self.defaults, trusted=decoded_json and self.decoded_json_is_json)
        )
        if not isinstance(result, Problem):
            request, item = result
            custom_id = request.custom_id
            if custom_id in self.seen:
                first = self._first_line(custom_id) if len(self.problems) < SHOWN_PROBLEMS else "?"
                result = Problem(line, custom_id, f"duplicate custom_id (first seen on line {first})")
            elif len(item) > self.item_limit:
                reason = f"request is {len(item)} bytes, over the {self.item_limit}-byte batch body limit"
                result = Problem(line, custom_id, reason)
            else:
                self._keep(line, request, item)
                return
        self.bad += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(result)

    def add_jsonl(self, source: JsonlSource) -> None:
        """JSONL lines, numbered from 1: what `add` would accept and name, with less Python per line.

        A block of lines the schema accepts whole is appended as written in a few C calls
        (`_add_block`); any other block goes line by line (`_add_lines`). Either way a line's item is
        the same bytes (the line as written, or msgspec's encoding when it needs a default filled
        in), so the fingerprint does not depend on how the file was cut into blocks.
        """
        decoder = schema.decoder(self.defaults.system is not None)
        parts = source.blocks()
        if parts is None:
            self._add_lines(source.lines(), decoder)
            return
        for part in parts:
            if not self._add_block(part, decoder):
                self._add_lines(part.split(b"\n"), decoder)

    def _add_block(self, part: bytes, decoder: msgspec.json.Decoder[schema.Decoded]) -> bool:
        """Append a block of complete lines as written if every line passes; False (nothing changed) if not."""
        if self.bad or len(part) > self.item_limit or not schema.valid_utf8(part):
            return False
        newlines = schema.object_lines(part)
        if newlines is None:  # a blank or spaced line: the per-line road says what it is
            return False
        try:
            requests = decoder.decode_lines(part)
        except (msgspec.DecodeError, RecursionError):  # a bad line, a field to fill in: the per-line road says which
            return False
        if schema.CACHE_CONTROL_KEY in part and not _cache_controls_pass(part):
            return False  # (the per-line road names the line)
        count = len(newlines) + 1
        custom_ids = [request.custom_id for request in requests]
        if len(custom_ids) != count or not self.seen.fresh(custom_ids):
            return False  # (a line holding two requests, a custom_id seen before)
        self.prepared.facts.add_block(self.number + 1, [r.params for r in requests])
        self.number += count
        prepared = self.prepared
        if len(prepared):
            prepared._write(b",")
        base = prepared.size
        prepared._write(part.replace(b"\n", b","))
        prepared.ends.extend(map(base.__add__, newlines))
        prepared.ends.append(base + len(part))
        prepared.custom_ids.extend(custom_ids)
        prepared.as_written += count
        self._settle()
        return True

    def _add_lines(self, lines: Iterable[bytes], decoder: msgspec.json.Decoder[schema.Decoded]) -> None:
        """Line by line: as written if the schema accepts the line as it stands; else decoded and given to `add`."""
        seen, item_limit, decode_typed, decode = self.seen, self.item_limit, decoder.decode, _decoder.decode
        for line in lines:
            self.number += 1
            number = self.number
            if line[-1:] == b"\n":  # given as lines (a block's are split without their newlines)
                line = line[:-1]
            try:
                request = decode_typed(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # `add` names it, or fills a default
                pass
            else:
                custom_id = request.custom_id
                if not (
                    self.bad
                    or custom_id in seen
                    or len(line) > item_limit
                    or not schema.valid_utf8(line)
                    or (schema.CACHE_CONTROL_KEY in line and schema.cache_control_problem(line) is not None)
                ):
                    self.prepared.as_written += 1
                    self._keep(number, request, line)
                    continue
            try:
                entry = decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                if line.strip():  # a blank line is no request
                    self.add(number, Problem(number, None, schema.undecodable_reason(line, exc)))
                continue
            self.add(number, entry, decoded_json=True)

    def _first_line(self, custom_id: str) -> int:
        """The line a custom_id seen before was on (a scan: only for the problems shown)."""
        if custom_id in self.unkept_lines:
            return self.unkept_lines[custom_id]
        return self.prepared.facts.lines[self.prepared.custom_ids.index(custom_id)]

    def _keep(self, number: int, request: schema.Decoded, item: bytes) -> None:
        self.seen.add(request.custom_id)
        if self.bad:  # once the input is known to be bad, stop building what will never be sent
            self.unkept += 1
            self.unkept_lines[request.custom_id] = number
            return
        self.prepared._append(request.custom_id, item)
        self.prepared.facts.add(number, request.params)
        self._settle()

    def _settle(self) -> None:
        """After requests were kept: once the items spill (more than one batch), so does the duplicate check."""
        self.prepared._settle()
        if self.prepared.spilled and not self.seen.on_disk:
            self.seen.move_to_disk()


def _encoded_request(
    line: int, entry: object, defaults: RequestDefaults, *, trusted: bool
) -> Problem | tuple[schema.Decoded, bytes]:
    """A request (as the schema decoded it) and its item (custom_id first, params with the defaults filled
    in), or its Problem.

    `trusted`: `entry` was decoded from JSON and the defaults are JSON, so it encodes back unchanged.
    """
    candidate: object = entry
    custom_id = None
    if isinstance(entry, Mapping):
        given = entry.get("custom_id")
        custom_id = given if isinstance(given, str) else None
        ordered = {**{key: entry[key] for key in schema.REQUEST_KEYS if key in entry}, **entry}
        if isinstance(params := entry.get("params"), Mapping):
            ordered["params"] = defaults.apply(params)
        candidate = ordered
    try:
        item = _encoder.encode(candidate)
    except (TypeError, msgspec.EncodeError, UnicodeEncodeError, RecursionError) as exc:
        if isinstance(candidate, Mapping):
            return Problem(line, custom_id, _unencodable_reason(candidate, exc))
        item = b"null"  # not an object, JSON or not: the schema names what it is
    try:
        request = schema.decoder(False).decode(item)
    except msgspec.ValidationError as error:
        return Problem(line, custom_id, schema.refusal(error, entry))
    except RecursionError:
        return Problem(line, custom_id, "params are nested too deeply to encode")
    if schema.CACHE_CONTROL_KEY in item and (problem := schema.cache_control_problem(item)) is not None:
        return Problem(line, custom_id, problem)
    if not trusted and _decoder.decode(item) != candidate:  # sent as something else (NaN as null, ...)?
        reason = schema.not_json_reason(candidate, "")
        if reason is not None:
            return Problem(line, custom_id, _not_json_message(reason))
    return request, item


def _cache_controls_pass(part: bytes) -> bool:
    """Whether every line of a block that holds `cache_control` sets breakpoints the API accepts."""
    return all(
        schema.cache_control_problem(line) is None for line in part.split(b"\n") if schema.CACHE_CONTROL_KEY in line
    )


def _unencodable_reason(request: Mapping[str, object], exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        bad_text = exc.object[exc.start : exc.end]
        return f"params hold text that is not valid Unicode ({exc.reason}: {bad_text!r})"
    if isinstance(exc, RecursionError):
        return "params are nested too deeply to encode"
    return _not_json_message(schema.not_json_reason(request, "") or str(exc))


def _not_json_message(reason: str) -> str:
    return f"{'params are' if reason.startswith('params') else 'the request is'} not JSON-serializable: {reason}"
