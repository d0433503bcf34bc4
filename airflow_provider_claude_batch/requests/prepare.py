"""Build, validate, fingerprint and split batch requests, serializing each request exactly once.

Requests are laid out in one growing buffer as the create body's items (`{"custom_id":..,"params":..},{...}`),
so a batch's body is a contiguous slice of it: splitting and sending copy nothing. Every problem is
collected with its line number, and the caller raises one error that names the first offenders
before anything is sent.

A request given as a Python object is encoded by msgspec. A JSONL line is kept as written when a
typed decode accepts it (`as_written`: a block of lines per C call, nothing built per line); other
lines are decoded, checked, given the defaults and encoded (`_Preparer.add_jsonl`), or named as a
problem by the reference checks (`_Preparer.add`). The buffer is hashed on a second thread while it
grows: that sha256 is the fingerprint that recognises a resubmission of the same work.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import string
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.requests import schema as as_written

CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CUSTOM_ID_CHARS = string.ascii_letters + string.digits + "_-"  # `not s.strip(these)`: 3x faster than the pattern
BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
SHOWN_PROBLEMS = 10
_ROLES = ("user", "assistant")
_REJECTED_IN_BATCHES = {
    "stream": "streaming is not supported in batches",
    "speed": "fast mode is not supported in batches",
}
_HASH_BLOCK_BYTES = 1 << 20  # the buffer is hashed in pieces this big (each a copy) as it grows
READ_BYTES = 1 << 20  # a JSONL file is read in blocks this big
_BACKGROUND_HASH_BYTES = 1 << 16  # below this, a thread costs more than the hashing it would overlap
# Fingerprints written since JSONL lines are sent as written. One without this prefix was computed
# over every request as msgspec encodes it (`PreparedRequests.recognises` still knows it).
FINGERPRINT_PREFIX = "v2:"

ParamsBuilder = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class RequestDefaults:
    """Filled into each request's params when the request does not set them."""

    model: str | None = None
    max_tokens: int | None = None
    system: str | list[Any] | None = None

    def apply(self, params: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(params)
        for name in ("model", "max_tokens", "system"):
            value = getattr(self, name)
            if value is not None and name not in merged:
                merged[name] = value
        return merged


@dataclass(frozen=True)
class Problem:
    line: int
    custom_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f"custom_id {self.custom_id!r}" if self.custom_id else "no custom_id"
        return f"line {self.line} ({who}): {self.reason}"


class PreparedRequests:
    """Validated requests, serialized once, with their fingerprint; split with `plan_batches`."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.starts: array[int] = array("Q")
        self.ends: array[int] = array("Q")
        self.custom_ids: list[str] = []
        self.as_written = 0  # how many JSONL lines `prepare_requests` kept as written (not kept by `subset`)
        # How many requests the input held, good and bad: once one is bad, the good ones after it are
        # checked (so the count and the problems are complete) but not kept, as nothing will be sent.
        self.requests_read = 0
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.custom_ids)

    def _append(self, custom_id: str, item: bytes) -> None:
        if self.custom_ids:
            self.buffer += b","
        self.starts.append(len(self.buffer))
        self.buffer += item
        self.ends.append(len(self.buffer))
        self.custom_ids.append(custom_id)
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        """sha256 of the requests in order, as they are sent: the same input always gives the same value.

        Hashed once over the whole buffer (one C call), not request by request.
        """
        if self._fingerprint is None:
            self._fingerprint = FINGERPRINT_PREFIX + hashlib.sha256(self.buffer).hexdigest()
        return self._fingerprint

    def recognises(self, recorded: str) -> bool:
        """Is `recorded` (a submission record's fingerprint) this input's, in this version's form or the earlier one?

        A record written before JSONL lines were sent as written holds the sha256 of every request
        as msgspec encodes it. That is recomputed only for such a record, so a task retried across
        the upgrade re-attaches to its batches instead of paying for them again.
        """
        if recorded == self.fingerprint:
            return True
        if recorded.startswith(FINGERPRINT_PREFIX):
            return False
        legacy = hashlib.sha256()  # (an item that is msgspec's encoding already comes out the same)
        with memoryview(self.buffer) as view:
            try:
                for index, (start, end) in enumerate(zip(self.starts, self.ends, strict=True)):
                    request = _decoder.decode(view[start:end])
                    legacy.update((b"," if index else b"") + _encode_item(request["custom_id"], request["params"]))
            except msgspec.DecodeError:  # a number msgspec cannot hold: the earlier version refused this input
                return False
        return recorded == legacy.hexdigest()

    def item_size(self, index: int) -> int:
        return self.ends[index] - self.starts[index]

    def body_size(self, first: int, stop: int) -> int:
        return len(BODY_PREFIX) + self.ends[stop - 1] - self.starts[first] + len(BODY_SUFFIX)

    def iter_body(self, first: int, stop: int, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The create body for requests [first, stop), in chunks: a view of the buffer, never a copy of it all."""
        yield BODY_PREFIX
        view = memoryview(self.buffer)[self.starts[first] : self.ends[stop - 1]]
        try:
            for offset in range(0, len(view), chunk_bytes):
                yield bytes(view[offset : offset + chunk_bytes])
        finally:
            view.release()
        yield BODY_SUFFIX

    def body(self, first: int, stop: int) -> bytes:
        return b"".join(self.iter_body(first, stop))

    def subset(self, custom_ids: Iterable[str]) -> PreparedRequests:
        """Only these requests (in input order), serialized exactly as before: a follow-up round."""
        wanted = set(custom_ids)
        chosen = PreparedRequests()
        for index, custom_id in enumerate(self.custom_ids):
            if custom_id in wanted:
                chosen._append(custom_id, bytes(self.buffer[self.starts[index] : self.ends[index]]))
        missing = wanted - set(chosen.custom_ids)
        if missing:
            raise KeyError(f"not in the input: {sorted(missing)[:5]}")
        return chosen


@dataclass(frozen=True)
class BatchPlan:
    """One batch of a split input: requests [first, stop)."""

    index: int
    first: int
    stop: int
    body_bytes: int

    @property
    def request_count(self) -> int:
        return self.stop - self.first


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _encode_item(custom_id: str, params: Mapping[str, Any]) -> bytes:
    """A request as msgspec encodes it for the body: custom_id first, params' keys in their order."""
    return _encoder.encode({"custom_id": custom_id, "params": params})


def prepare_requests(
    entries: Iterable[tuple[int, object]],
    defaults: RequestDefaults = RequestDefaults(),
    *,
    max_body_bytes: int = API_MAX_BODY_BYTES,
) -> tuple[PreparedRequests, list[Problem], int]:
    """Validate and serialize `(line number, request)` pairs.

    Returns the prepared requests, the first problems found, and how many requests were bad in all.
    An entry may already be a `Problem` (e.g. a line that was not JSON). Entries from `iter_jsonl`
    take the JSONL road (`_Preparer.add_jsonl`): the same problems, the same bytes, the same fingerprint.
    """
    preparer = _Preparer(defaults, max_body_bytes)
    if isinstance(entries, JsonlEntries):
        preparer.add_jsonl(entries)
    else:
        for line, entry in entries:
            preparer.add(line, entry)
    prepared = preparer.prepared
    prepared.requests_read = len(prepared) + preparer.unkept + preparer.bad
    return prepared, preparer.problems, preparer.bad


class _Preparer:
    """One `prepare_requests` call: what is kept, what was wrong, and where each custom_id was first seen."""

    def __init__(self, defaults: RequestDefaults, max_body_bytes: int) -> None:
        self.defaults = defaults
        self.prepared = PreparedRequests()
        self.problems: list[Problem] = []
        self.bad = 0
        self.unkept = 0  # good requests after the first bad one (counted, not kept)
        self.seen: dict[str, int] = {}
        self.item_limit = max_body_bytes - len(BODY_PREFIX) - len(BODY_SUFFIX)
        self.number = 0  # the JSONL line last read
        self.hasher = _BackgroundSha256()

    def add(self, line: int, entry: object) -> None:
        """One request on the reference road: `_check_request`, naming each problem."""
        problem = entry if isinstance(entry, Problem) else None
        item = b""
        custom_id = None
        if problem is None:
            custom_id, item, reason = _check_request(entry, self.defaults)
            if reason is None and custom_id is not None and custom_id in self.seen:
                reason = f"duplicate custom_id (first seen on line {self.seen[custom_id]})"
            if reason is None and len(item) > self.item_limit:
                reason = f"request is {len(item)} bytes, over the {self.item_limit}-byte batch body limit"
            if reason is not None:
                problem = Problem(line, custom_id, reason)
        if problem is not None:
            self.bad += 1
            if len(self.problems) < SHOWN_PROBLEMS:
                self.problems.append(problem)
            return
        assert custom_id is not None
        self.seen[custom_id] = line
        if self.bad:  # once the input is known to be bad, stop building what will never be sent
            self.unkept += 1
        else:
            self.prepared._append(custom_id, item)

    def add_jsonl(self, entries: JsonlEntries) -> None:
        """JSONL lines, numbered from 1: what the reference road would accept and name, with less Python per line.

        A block of lines a typed decode accepts whole is appended as written in a few C calls
        (`_add_block`); any other block goes line by line (`_add_lines`). Either way a line's item is
        the same bytes (the line as written, or msgspec's encoding when it needs a default filled
        in), so the fingerprint does not depend on how the file was cut into blocks. The buffer is
        hashed on a second thread as it grows.
        """
        decoder = as_written.decoder(self.defaults.system is not None)
        try:
            if entries.blocks:
                for part in entries.parts():
                    if not self._add_block(part, decoder):
                        self._add_lines(part.split(b"\n"), decoder)
            else:
                self._add_lines(entries.source, decoder)
        finally:
            self.hasher.close()
        if not self.bad:
            self.hasher.update(self.prepared.buffer[self.hasher.length :])
            self.prepared._fingerprint = FINGERPRINT_PREFIX + self.hasher.hexdigest()

    def _add_block(self, part: bytes, decoder: msgspec.json.Decoder[as_written.Decoded]) -> bool:
        """Append a block of complete lines as written if every line passes; False (nothing changed) if not."""
        if self.bad or len(part) > self.item_limit or not as_written.valid_utf8(part):
            return False
        newlines = as_written.object_lines(part)
        if newlines is None:  # a blank or spaced line: the per-line road says what it is
            return False
        try:
            requests = decoder.decode_lines(part)
        except (msgspec.DecodeError, RecursionError):  # a bad line, a field to fill in: the per-line road says which
            return False
        count = len(newlines) + 1
        custom_ids = as_written.accepted_custom_ids(requests)
        seen = self.seen
        if (
            len(custom_ids) != count
            or not as_written.plain_custom_ids(custom_ids)
            or not seen.keys().isdisjoint(custom_ids)
            or len(set(custom_ids)) != count
        ):
            return False  # (a line asking to stream or holding two requests, a custom_id seen before)
        seen.update(zip(custom_ids, range(self.number + 1, self.number + 1 + count), strict=True))
        self.number += count
        prepared = self.prepared
        buffer = prepared.buffer
        if prepared.custom_ids:
            buffer += b","
        base = len(buffer)
        buffer += part.replace(b"\n", b",")
        prepared.starts.append(base)
        prepared.starts.extend(map((base + 1).__add__, newlines))
        prepared.ends.extend(map(base.__add__, newlines))
        prepared.ends.append(base + len(part))
        prepared.custom_ids += custom_ids
        prepared.as_written += count
        self._hash_some()
        return True

    def _add_lines(self, lines: Iterable[bytes], decoder: msgspec.json.Decoder[as_written.Decoded]) -> None:
        """Line by line: as written if the typed decode accepts the line; else decoded, checked, given
        the defaults and encoded by msgspec as the reference road does; else named by `add`.
        """
        prepared = self.prepared
        seen, item_limit, roles, id_chars = self.seen, self.item_limit, _ROLES, _CUSTOM_ID_CHARS
        decode_typed, decode = decoder.decode, _decoder.decode
        fills = [
            (name, value)
            for name in ("model", "max_tokens", "system")
            if (value := getattr(self.defaults, name)) is not None
        ]
        # A default msgspec would encode as something else (a NaN, a set): every line goes to `add`, which names it
        fills_not_json = not_json_reason(dict(fills)) is not None
        custom_id: Any  # JSON, until the checks below say what it is
        params: Any
        messages: Any
        for line in lines:
            self.number += 1
            number = self.number
            if line[-1:] == b"\n":  # given as lines (a block's are split without their newlines)
                line = line[:-1]
            try:
                typed = decode_typed(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # the decode below names it
                pass
            else:
                custom_id = typed.custom_id
                if not (
                    self.bad
                    or typed.params.stream
                    or custom_id.strip(id_chars)
                    or custom_id in seen
                    or len(line) > item_limit
                    or not as_written.valid_utf8(line)
                ):
                    prepared.as_written += 1
                    self._keep(number, custom_id, line)
                    continue
            try:
                entry = decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                if line.strip():  # a blank line is no request
                    self.add(number, Problem(number, None, undecodable_reason(line, exc)))
                continue
            custom_id = entry.get("custom_id") if type(entry) is dict else None
            params = entry.get("params") if type(custom_id) is str else None
            if (
                type(params) is not dict
                or len(entry) != 2
                or not 0 < len(custom_id) <= 64
                or custom_id.strip(id_chars)
                or "speed" in params
                or params.get("stream", False) is not False
            ):
                self.add(number, entry)
                continue
            for name, value in fills:  # in place, in RequestDefaults.apply's order
                if name not in params:
                    params[name] = value
            model, max_tokens, messages = params.get("model"), params.get("max_tokens"), params.get("messages")
            good = (
                type(model) is str
                and model
                and type(max_tokens) is int
                and max_tokens >= 1
                and type(messages) is list
                and messages
            )
            if good:
                for message in messages:
                    if type(message) is not dict or message.get("role") not in roles:
                        good = False
                        break
                    content = message.get("content")
                    if not content or (type(content) is not str and type(content) is not list):
                        good = False
                        break
            if not good or self.bad or custom_id in seen or fills_not_json:
                self.add(number, entry)
                continue
            try:
                # Not encode_into: growing a large bytearray that way made peak memory 1.5x the body
                item = _encode_item(custom_id, params)
            except (TypeError, msgspec.EncodeError, UnicodeEncodeError, RecursionError):  # e.g. a default not JSON
                good = False
            if not good or len(item) > item_limit:
                self.add(number, entry)
                continue
            self._keep(number, custom_id, item)

    def _keep(self, number: int, custom_id: str, item: bytes) -> None:
        self.seen[custom_id] = number
        self.prepared._append(custom_id, item)
        self._hash_some()

    def _hash_some(self) -> None:
        """Hand the buffer's newest megabyte(s) to the hashing thread (a copy: the buffer goes on growing)."""
        buffer = self.prepared.buffer
        if len(buffer) - self.hasher.length >= _HASH_BLOCK_BYTES and not self.bad:
            self.hasher.update(buffer[self.hasher.length :])


class _BackgroundSha256:
    """sha256 fed piece by piece on a second thread (hashlib releases the GIL), so hashing the
    buffer overlaps the checking and encoding of the lines that follow instead of adding its time
    after (about 0.4 s per 100 MB on a CPU without SHA instructions). One piece in flight at a time,
    in order: the digest is that of one sha256 over the whole buffer.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.length = 0

    def update(self, data: bytes | bytearray) -> None:
        self._wait()
        self.length += len(data)
        if len(data) < _BACKGROUND_HASH_BYTES:
            self._hash.update(data)
            return
        self._thread = threading.Thread(target=self._run, args=(data,), name="fingerprint", daemon=True)
        self._thread.start()

    def hexdigest(self) -> str:
        self._wait()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Wait for the piece in flight, so no thread outlives the call that started it."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, data: bytes | bytearray) -> None:
        try:
            self._hash.update(data)
        except BaseException as exc:  # re-raised in the caller's thread by _wait
            self._error = exc

    def _wait(self) -> None:
        self.close()
        if self._error is not None:
            raise self._error


def _check_request(entry: object, defaults: RequestDefaults) -> tuple[str | None, bytes, str | None]:
    if not isinstance(entry, Mapping):
        return None, b"", f"expected an object with custom_id and params, got {type(entry).__name__}"
    custom_id = entry.get("custom_id")
    unexpected = sorted(set(entry) - {"custom_id", "params"})
    if not isinstance(custom_id, str):
        return None, b"", "custom_id is missing or not a string"
    if not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        return custom_id, b"", "custom_id must be 1-64 characters of letters, digits, '_' or '-'"
    if unexpected:
        return custom_id, b"", f"unexpected key(s) {unexpected}; a request has only custom_id and params"
    params = entry.get("params")
    if not isinstance(params, Mapping):
        return custom_id, b"", "params is missing or not an object"
    params = defaults.apply(params)
    reason = check_params(params)
    if reason is not None:
        return custom_id, b"", reason
    try:
        item = _encode_item(custom_id, params)
        # msgspec encodes some values JSON has not as something else (NaN as null, a set as a list,
        # bytes as base64, an int key as a string): what it encoded must decode back to the same.
        same = _decoder.decode(item)["params"] == params
    except (TypeError, msgspec.EncodeError) as exc:
        return custom_id, b"", f"params are not JSON-serializable: {not_json_reason(params) or exc}"
    except UnicodeEncodeError as exc:
        bad_text = exc.object[exc.start : exc.end]
        return custom_id, b"", f"params hold text that is not valid Unicode ({exc.reason}: {bad_text!r})"
    except RecursionError:
        return custom_id, b"", "params are nested too deeply to encode"
    if not same:
        reason = not_json_reason(params)
        if reason is not None:
            return custom_id, b"", f"params are not JSON-serializable: {reason}"
    return custom_id, item, None


def not_json_reason(params: object, root: str = "params") -> str | None:
    """Where `params` (named `root`) holds a value JSON has no form for, in input order (None if it holds none).

    Iterative, so a deeply nested value is walked rather than ending in a RecursionError.
    """
    stack: list[tuple[str, object]] = [(root, params)]
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | int):  # (bool is an int)
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {value!r}, and JSON has no NaN or infinity"
            continue
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str):
                    return f"{path} has the key {key!r}, and JSON keys are strings"
            stack.extend((f"{path}.{key}", value[key]) for key in reversed(list(value)))
            continue
        if isinstance(value, list | tuple):
            stack.extend((f"{path}[{index}]", value[index]) for index in reversed(range(len(value))))
            continue
        return f"{path} is a {type(value).__name__}; JSON holds only dicts, lists, strings, numbers, booleans and None"
    return None


def undecodable_reason(line: bytes, exc: Exception) -> str:
    """Why a line could not be decoded, with the byte and column for text that is not UTF-8."""
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        try:  # msgspec's position is within one string; the line's is what the user can find
            line.decode()
        except UnicodeDecodeError as whole:
            return not_utf8_reason(line, whole)
    return f"not valid JSON: {exc}"


def not_utf8_reason(line: bytes, exc: UnicodeDecodeError) -> str:
    """A line's UTF-8 error as the user can find it: the byte and where it is in the line."""
    return (
        f"not valid UTF-8: byte 0x{line[exc.start]:02x} at byte {exc.start + 1} of the line "
        "(save the file as UTF-8; Latin-1 or Windows-1252 text looks like this)"
    )


def check_params(params: Mapping[str, Any]) -> str | None:
    """The checks the API would otherwise run hours later, returning errored lines."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return "params.model is missing (set it per request or with the operator's model=)"
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "params.max_tokens is missing or not an integer (set it per request or with max_tokens=)"
    if max_tokens < 1:
        return "params.max_tokens must be at least 1 in a batch"
    messages = params.get("messages")
    if not isinstance(messages, list):
        return "params.messages is missing or not a list"
    if not messages:
        return "params.messages is empty"
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            return f"params.messages[{position}] needs a role of 'user' or 'assistant'"
        content = message.get("content")
        if not isinstance(content, str | list) or not content:
            return f"params.messages[{position}].content is missing or empty"
    for name, why in _REJECTED_IN_BATCHES.items():
        if name in params and not (name == "stream" and params[name] is False):
            return f"params.{name}: {why}"
    return None


def plan_batches(
    prepared: PreparedRequests, *, max_requests: int = API_MAX_REQUESTS, max_body_bytes: int = API_MAX_BODY_BYTES
) -> list[BatchPlan]:
    """Split into as few batches as the count and size limits allow, keeping the input order.

    Each batch takes as many requests as fit (a bisection over the item end offsets), and always at
    least one, so a request too large for any batch still lands alone in its own.
    """
    if not 1 <= max_requests <= API_MAX_REQUESTS:
        raise ValueError(f"max_requests_per_batch must be between 1 and {API_MAX_REQUESTS}")
    plans: list[BatchPlan] = []
    first = 0
    total = len(prepared)
    items_room = max_body_bytes - len(BODY_PREFIX) - len(BODY_SUFFIX)
    while first < total:
        fitting = bisect_right(prepared.ends, prepared.starts[first] + items_room, first)
        stop = max(first + 1, min(fitting, first + max_requests))
        plans.append(BatchPlan(len(plans), first, stop, prepared.body_size(first, stop)))
        first = stop
    return plans


class JsonlEntries:
    """A JSONL input: a binary file (read in blocks), the file's bytes in blocks split anywhere, or
    its lines. Iterated: the numbered decoded lines, blank ones skipped, a bad one a Problem. Given to
    `prepare_requests`: the same requests, checked with less Python per line.
    """

    def __init__(self, source: Iterable[bytes], *, blocks: bool) -> None:
        self.source = source
        self.blocks = blocks

    def line_groups(self) -> Iterable[Iterable[bytes]]:
        """The lines, in groups (one block's lines at a time, or all the given lines as one group)."""
        if not self.blocks:
            return (self.source,)
        return (part.split(b"\n") for part in self.parts())

    def parts(self) -> Iterator[bytes]:
        """For a file or blocks: the complete lines of each block, as one piece without its last newline."""
        read = getattr(self.source, "read", None)
        blocks = read_blocks(self.source) if callable(read) else self.source
        return _block_parts(blocks)

    def __iter__(self) -> Iterator[tuple[int, object]]:
        number = 0
        for lines in self.line_groups():
            for line in lines:
                number += 1
                if line.strip():
                    yield number, _decode_line(number, line)


def read_blocks(handle: Any) -> Iterator[bytes]:
    """A binary file's bytes in READ_BYTES blocks (split anywhere, not at line ends)."""
    return iter(functools.partial(handle.read, READ_BYTES), b"")


def iter_jsonl(source: Iterable[bytes]) -> JsonlEntries:
    """Number and decode JSONL lines (a binary file's, or the given lines); blank lines are skipped, a
    bad line becomes a Problem.
    """
    return JsonlEntries(source, blocks=callable(getattr(source, "read", None)))


def iter_jsonl_blocks(blocks: Iterable[bytes]) -> JsonlEntries:
    """Like `iter_jsonl`, for a file's bytes given in blocks split anywhere (not at line ends)."""
    return JsonlEntries(blocks, blocks=True)


def _block_parts(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Each block's complete lines, joined by their newlines (the last one's left off); the last line
    of the input may end without one.
    """
    pending: list[bytes] = []  # the start of a line that has not ended yet (one line may span blocks)
    for block in blocks:
        cut = block.rfind(b"\n")
        if cut < 0:
            pending.append(block)
            continue
        yield b"".join([*pending, memoryview(block)[:cut]]) if pending else block[:cut]  # one copy, not two
        pending = [block[cut + 1 :]]
    if any(pending):
        yield b"".join(pending)


def _decode_line(number: int, line: bytes) -> object:
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # invalid UTF-8 is the second
        return Problem(number, None, undecodable_reason(line, exc))


class RowError(ValueError):
    """A row a template cannot fill: the message is the reason shown for the row, as is."""


class TemplateError(ValueError):
    """A params_template that no row could fill (a bad placeholder): refused before any row is read."""


def rows_to_requests(
    rows: Iterable[tuple[int, object]], *, custom_id_column: str, build_params: ParamsBuilder
) -> Iterator[tuple[int, object]]:
    """ETL input: each row becomes `{"custom_id": row[custom_id_column], "params": build_params(row)}`.

    Whatever `build_params` raises is that row's problem, named with its line, never an error that
    ends the task with a traceback (and would be retried, failing the same way).
    """
    for number, row in rows:
        if isinstance(row, Problem):
            yield number, row
            continue
        if not isinstance(row, Mapping):
            yield number, Problem(number, None, f"a row must be an object, got {type(row).__name__}")
            continue
        custom_id = row.get(custom_id_column)
        if custom_id is None or custom_id == "":
            yield number, Problem(number, None, f"column {custom_id_column!r} is missing or empty")
            continue
        if isinstance(custom_id, bool) or not isinstance(custom_id, str | int):  # 1.0 would become "1.0"
            yield (
                number,
                Problem(
                    number,
                    None,
                    f"column {custom_id_column!r} must be text or a whole number, "
                    f"got {type(custom_id).__name__} {custom_id!r:.40}",
                ),
            )
            continue
        custom_id = str(custom_id)
        try:
            params = cast("object", build_params(row))  # the user's code may return anything
        except RowError as exc:
            yield number, Problem(number, custom_id, str(exc))
            continue
        except Exception as exc:  # the user's code: any failure is this row's
            yield number, Problem(number, custom_id, f"could not build params from the row: {exc!r:.300}")
            continue
        if not isinstance(params, Mapping):
            reason = f"build_params returned {type(params).__name__}, not a dict of params"
            yield number, Problem(number, custom_id, reason)
            continue
        yield number, {"custom_id": custom_id, "params": params}


def template_params_builder(template: Mapping[str, Any]) -> ParamsBuilder:
    """Params from a template whose strings use `{column}` placeholders (`{{`/`}}` for literal braces).

    `str.format` syntax rather than Jinja, because Airflow renders Jinja when the task starts, long
    before there is a row to render it with. A placeholder names a column, nothing else (no
    `{col.attr}`, `{col[0]}` or `{}`: those read Python attributes, not data), and the template is
    checked once, before any row. A row whose value for a placeholder is missing, empty or not text
    or a number is refused, rather than sending "None" or a Python repr to the model.
    """
    if not isinstance(template, Mapping):
        raise TemplateError(f"params_template must be a dict of params, got {type(template).__name__}")
    placeholders: dict[str, tuple[str, ...]] = {}  # each string of the template: the columns it names

    def compile_(value: Any, path: str) -> None:
        if isinstance(value, str):
            placeholders[value] = _placeholders(value, path)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                compile_(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                compile_(item, f"{path}[{index}]")

    compile_(template, "params_template")

    def render(value: Any, row: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            for name in placeholders[value]:
                _check_placeholder_value(row, name)
            return value.format_map(row)
        if isinstance(value, Mapping):
            return {k: render(v, row) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, row) for v in value]
        return value

    def build(row: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            return render(template, row)  # type: ignore[no-any-return]
        except RowError:
            raise
        except (ValueError, TypeError) as exc:  # e.g. a format spec the value does not take: `{name:d}`
            raise RowError(f"could not fill params_template: {exc}") from None

    return build


def _placeholders(text: str, path: str) -> tuple[str, ...]:
    """The column names a template string's placeholders name; TemplateError for any other placeholder."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{path}: {exc} in {text!r:.80} (write {{{{ and }}}} for literal braces)") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if (
            not name
            or name.isdigit()
            or "." in name
            or "[" in name
            or "{" in (spec or "")
            or conversion not in (None, "s", "r", "a")
        ):
            raise TemplateError(
                f"{path}: placeholder {{{name}}} must name a column, as {{column}} "
                "(no positions, attributes, indexes or nested placeholders)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def _check_placeholder_value(row: Mapping[str, Any], name: str) -> None:
    if name not in row:
        columns = ", ".join(repr(column) for column in list(row)[:12])
        raise RowError(f"placeholder {{{name}}} names no column of the row (its columns: {columns})")
    value = row[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"placeholder {{{name}}}: the row's value is empty")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(f"placeholder {{{name}}}: the row's value is {value!r}")
    if not isinstance(value, str | int | float):
        raise RowError(
            f"placeholder {{{name}}}: the row's value is a {type(value).__name__}; a template places "
            "text and numbers (use build_params for anything else)"
        )
