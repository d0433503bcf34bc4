"""Build, validate, fingerprint and split batch requests, serializing each request exactly once.

Requests are encoded straight into one growing buffer laid out as the create body's items
(`{"custom_id":..,"params":..},{...}`), so a batch's body is a contiguous slice of it: splitting
and sending copy nothing. Every problem is collected with its line number, and the caller raises
one error that names the first offenders before anything is sent.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS

CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
SHOWN_PROBLEMS = 10
_ROLES = ("user", "assistant")
_REJECTED_IN_BATCHES = {"stream": "streaming is not supported in batches",
                        "speed": "fast mode is not supported in batches"}

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
        """sha256 of the serialized requests in order: the same input always gives the same value.

        Hashed once over the whole buffer (one C call), not request by request.
        """
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.buffer).hexdigest()
        return self._fingerprint

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


def prepare_requests(entries: Iterable[tuple[int, object]], defaults: RequestDefaults = RequestDefaults(),
                     *, max_body_bytes: int = API_MAX_BODY_BYTES) -> tuple[PreparedRequests, list[Problem], int]:
    """Validate and serialize `(line number, request)` pairs.

    Returns the prepared requests, the first problems found, and how many requests were bad in all.
    An entry may already be a `Problem` (e.g. a line that was not JSON).
    """
    prepared = PreparedRequests()
    problems: list[Problem] = []
    bad = 0
    seen: dict[str, int] = {}
    item_limit = max_body_bytes - len(BODY_PREFIX) - len(BODY_SUFFIX)
    for line, entry in entries:
        problem = entry if isinstance(entry, Problem) else None
        item = b""
        custom_id = None
        if problem is None:
            custom_id, item, reason = _check_request(entry, defaults)
            if reason is None and custom_id is not None and custom_id in seen:
                reason = f"duplicate custom_id (first seen on line {seen[custom_id]})"
            if reason is None and len(item) > item_limit:
                reason = f"request is {len(item)} bytes, over the {item_limit}-byte batch body limit"
            if reason is not None:
                problem = Problem(line, custom_id, reason)
        if problem is not None:
            bad += 1
            if len(problems) < SHOWN_PROBLEMS:
                problems.append(problem)
            continue
        assert custom_id is not None
        seen[custom_id] = line
        if not bad:  # once the input is known to be bad, stop building what will never be sent
            prepared._append(custom_id, item)
    return prepared, problems, bad


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
        item = _encoder.encode({"custom_id": custom_id, "params": params})
    except (TypeError, msgspec.EncodeError) as exc:
        return custom_id, b"", f"params are not JSON-serializable: {exc}"
    return custom_id, item, None


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


def plan_batches(prepared: PreparedRequests, *, max_requests: int = API_MAX_REQUESTS,
                 max_body_bytes: int = API_MAX_BODY_BYTES) -> list[BatchPlan]:
    """Split into as few batches as the count and size limits allow, keeping the input order."""
    if not 1 <= max_requests <= API_MAX_REQUESTS:
        raise ValueError(f"max_requests_per_batch must be between 1 and {API_MAX_REQUESTS}")
    plans: list[BatchPlan] = []
    first = 0
    total = len(prepared)
    while first < total:
        stop = first + 1
        while (stop < total and stop - first < max_requests
               and prepared.body_size(first, stop + 1) <= max_body_bytes):
            stop += 1
        plans.append(BatchPlan(len(plans), first, stop, prepared.body_size(first, stop)))
        first = stop
    return plans


def iter_jsonl(lines: Iterable[bytes]) -> Iterator[tuple[int, object]]:
    """Number and decode JSONL lines; blank lines are skipped, a bad line becomes a Problem."""
    decoder = msgspec.json.Decoder()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, decoder.decode(line)
        except msgspec.DecodeError as exc:
            yield number, Problem(number, None, f"not valid JSON: {exc}")


def rows_to_requests(rows: Iterable[tuple[int, object]], *, custom_id_column: str,
                     build_params: ParamsBuilder) -> Iterator[tuple[int, object]]:
    """ETL input: each row becomes `{"custom_id": row[custom_id_column], "params": build_params(row)}`."""
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
        try:
            params = build_params(row)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            yield number, Problem(number, str(custom_id), f"could not build params from the row: {exc!r}")
            continue
        yield number, {"custom_id": str(custom_id), "params": params}


def template_params_builder(template: Mapping[str, Any]) -> ParamsBuilder:
    """Params from a template whose strings use `{column}` placeholders (`{{`/`}}` for literal braces).

    `str.format` syntax rather than Jinja, because Airflow renders Jinja when the task starts, long
    before there is a row to render it with.
    """

    def render(value: Any, row: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return value.format_map(row)
        if isinstance(value, Mapping):
            return {k: render(v, row) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, row) for v in value]
        return value

    def build(row: Mapping[str, Any]) -> Mapping[str, Any]:
        rendered = render(template, row)
        assert isinstance(rendered, dict)
        return rendered

    return build
