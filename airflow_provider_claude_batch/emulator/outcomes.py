"""What each emulated request turns into: the API's per-request checks plus test-chosen outcomes.

Everything here is pure and deterministic: the same custom_id and params give the same message,
usage and result-order position, so tests can assert exact numbers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PlannedOutcome = Literal["succeeded", "errored", "expired"]
API_VERSIONS = ("2023-06-01", "2026-10-21")
NEWEST_API_VERSION = "2026-10-21"
RETRYABLE_ERROR_TYPES = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")
KNOWN_ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    *RETRYABLE_ERROR_TYPES,
)
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """Choose the outcome of every request whose custom_id fully matches `match`.

    `times` limits the rule to the first N submissions of each matching custom_id (counted across
    batches), after which later rules apply: this is how a test makes a request fail twice and
    succeed on the third round.

    `straggle` holds a matching request unfinished in its batch: the batch stays `in_progress` until
    its 24 h expiry (the request then ends `expired`) or a cancel (it ends `canceled`, the rest as
    planned). Sent on its own to the Messages API, the same request is answered at once.
    """

    match: str
    outcome: PlannedOutcome = "succeeded"
    error_type: str = "api_error"
    error_message: str | None = None
    times: int | None = None
    text: str | None = None
    choices: tuple[str, ...] = ()
    stop_reason: str = "end_turn"
    straggle: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> OutcomeRule:
        """A rule from the control route's JSON; unknown fields and bad patterns are refused."""
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown outcome rule field(s): {sorted(unknown)}")
        rule = cls(**{**raw, "choices": tuple(raw.get("choices", ()))})
        re.compile(rule.match)
        if rule.outcome not in ("succeeded", "errored", "expired"):
            raise ValueError(f"outcome must be succeeded, errored or expired, not {rule.outcome!r}")
        if rule.outcome == "errored" and rule.error_type not in KNOWN_ERROR_TYPES:
            raise ValueError(f"unknown error_type {rule.error_type!r}; use one of {KNOWN_ERROR_TYPES}")
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be at least 1")
        if rule.straggle and rule.outcome != "succeeded":
            raise ValueError("a straggle rule holds a request unfinished: its outcome is succeeded (when sent alone)")
        return rule


@dataclass(slots=True)
class RequestRecord:
    """The little the emulator keeps per request: never the params themselves."""

    custom_id: str
    outcome: PlannedOutcome
    digest: int
    model: str = ""
    text: str = ""
    stop_reason: str = "end_turn"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    error_type: str = ""
    error_message: str = ""
    # Held unfinished in its batch until expiry or a cancel (a `straggle` rule).
    straggler: bool = False


class _Params(msgspec.Struct):
    """Only the fields the emulator checks; the rest of a Messages body is passed over unread."""

    model: object = None
    max_tokens: object = None
    messages: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    stream: object = None
    speed: object = msgspec.UNSET
    temperature: object = msgspec.UNSET
    top_p: object = msgspec.UNSET
    top_k: object = msgspec.UNSET


_params_decoder = msgspec.json.Decoder(_Params)
_messages_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def request_digest(custom_id: str, params: bytes) -> int:
    """A stable number per request, from which its reply text, cache split and order derive."""
    return int.from_bytes(hashlib.blake2b(custom_id.encode() + b"\0" + params, digest_size=8).digest())


def params_problem(params: bytes, api_version: str) -> tuple[str, str] | None:
    """The checks the real API runs on each request after create; a problem becomes an errored line."""
    try:
        p = _params_decoder.decode(params)
    except msgspec.DecodeError as exc:
        return "invalid_request_error", f"params: {exc}"
    if not isinstance(p.model, str) or not p.model:
        return "invalid_request_error", "model: Field required"
    if not p.model.startswith("claude-"):
        return "not_found_error", f"model: {p.model}"
    if isinstance(p.max_tokens, bool) or not isinstance(p.max_tokens, int):
        return "invalid_request_error", "max_tokens: Field required (an integer)"
    if p.max_tokens < 1:
        return "invalid_request_error", "max_tokens: must be at least 1 in a batch"
    if p.messages is msgspec.UNSET:
        return "invalid_request_error", "messages: Field required"
    try:
        messages = _messages_decoder.decode(p.messages)
    except msgspec.DecodeError:
        return "invalid_request_error", "messages: Input should be a valid list"
    if not messages:
        return "invalid_request_error", "messages: at least one message is required"
    if p.stream is True:
        return "invalid_request_error", "stream: streaming is not supported in Message Batches"
    if p.speed is not msgspec.UNSET:
        return "invalid_request_error", "speed: fast mode is not supported in Message Batches"
    if api_version == NEWEST_API_VERSION:
        for name in _SAMPLING_FIELDS:
            if getattr(p, name) is not msgspec.UNSET:
                return "invalid_request_error", f"{name}: Extra inputs are not permitted in {api_version}"
    return None


class OutcomePlanner:
    """Turns (custom_id, params) into a RequestRecord, following the rules and counting attempts."""

    def __init__(self, rules: Sequence[OutcomeRule] = ()) -> None:
        self.rules: list[OutcomeRule] = list(rules)
        self._compiled = [re.compile(r.match) for r in self.rules]
        self._applied: dict[tuple[int, str], int] = {}

    def plan(self, custom_id: str, params: bytes, api_version: str) -> RequestRecord:
        """The outcome of one request: the API's own checks first, then the first matching rule."""
        digest = request_digest(custom_id, params)
        problem = params_problem(params, api_version)
        if problem is not None:
            return RequestRecord(custom_id, "errored", digest, error_type=problem[0], error_message=problem[1])
        rule = self._matching_rule(custom_id)
        if rule is not None and rule.outcome == "errored":
            message = rule.error_message or f"emulated {rule.error_type}"
            return RequestRecord(custom_id, "errored", digest, error_type=rule.error_type, error_message=message)
        if rule is not None and rule.outcome == "expired":
            return RequestRecord(custom_id, "expired", digest)
        record = self._succeeded(custom_id, params, digest, rule)
        record.straggler = rule is not None and rule.straggle
        return record

    def _matching_rule(self, custom_id: str) -> OutcomeRule | None:
        for index, (rule, pattern) in enumerate(zip(self.rules, self._compiled, strict=True)):
            if not pattern.fullmatch(custom_id):
                continue
            if rule.times is not None:
                used = self._applied.get((index, custom_id), 0)
                if used >= rule.times:
                    continue
                self._applied[(index, custom_id)] = used + 1
            return rule
        return None

    @staticmethod
    def _succeeded(custom_id: str, params: bytes, digest: int, rule: OutcomeRule | None) -> RequestRecord:
        p = _params_decoder.decode(params)
        if not isinstance(p.model, str) or not isinstance(p.max_tokens, int):
            raise TypeError("plan() runs params_problem() first: model and max_tokens are checked there")
        if rule is not None and rule.text is not None:
            text = rule.text
        elif rule is not None and rule.choices:
            text = rule.choices[digest % len(rule.choices)]
        else:
            text = f"Emulated reply {digest:016x}"
        output_tokens = min(p.max_tokens, max(1, len(text) // 4))
        stop_reason = rule.stop_reason if rule is not None else "end_turn"
        if output_tokens == p.max_tokens and len(text) // 4 > p.max_tokens:
            stop_reason = "max_tokens"
        record = RequestRecord(
            custom_id,
            "succeeded",
            digest,
            model=p.model,
            text=text,
            stop_reason=stop_reason,
            input_tokens=max(1, len(params) // 4),
            output_tokens=output_tokens,
        )
        if b'"cache_control"' in params:
            _split_cache_tokens(record, one_hour=b'"1h"' in params)
        return record


def _split_cache_tokens(record: RequestRecord, *, one_hour: bool) -> None:
    """Emulate a shared cached prefix: one request in four writes the cache, the rest read it."""
    cached = record.input_tokens * 3 // 4
    record.input_tokens -= cached
    if record.digest % 4 == 0:
        if one_hour:
            record.cache_write_1h = cached
        else:
            record.cache_write_5m = cached
    else:
        record.cache_read = cached
