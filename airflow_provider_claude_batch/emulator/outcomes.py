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

from airflow_provider_claude_batch.emulator.models import ModelCatalog
from airflow_provider_claude_batch.emulator.structured import asked_schema, sample
from airflow_provider_claude_batch.emulator.tokens import Counted, tokens_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_provider_claude_batch.emulator.cache import PromptCache

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
    # For a request asking for structured output: reply with an object that does not fit its schema.
    invalid_output: bool = False
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
    tool_name: str = ""  # set when the reply is the forced tool's call (its input is `text`)
    # Held unfinished in its batch until expiry or a cancel (a `straggle` rule).
    straggler: bool = False


class _Params(Counted):
    """Only the fields the emulator checks and counts; the rest of a Messages body is passed over unread."""

    model: object = None
    max_tokens: object = None
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


_DEFAULT_MODELS = ModelCatalog()


def params_problem(params: bytes, api_version: str, models: ModelCatalog | None = None) -> tuple[str, str] | None:
    """The checks the real API runs on each request after create; a problem becomes an errored line.

    `models` is the workspace's catalogue (default: the built-in one): an unknown or retired model is
    a `not_found_error`, a `max_tokens` over the model's limit an `invalid_request_error`.
    """
    try:
        p = _params_decoder.decode(params)
    except msgspec.DecodeError as exc:
        return "invalid_request_error", f"params: {exc}"
    if not isinstance(p.model, str) or not p.model:
        return "invalid_request_error", "model: Field required"
    spec = (models or _DEFAULT_MODELS).resolve(p.model)
    if spec is None:
        return "not_found_error", f"model: {p.model}"
    if spec.lifecycle == "retired":
        return "not_found_error", f"model: {p.model} has been retired"
    if not spec.batch:
        return "invalid_request_error", f"model: {p.model} does not support Message Batches"
    if isinstance(p.max_tokens, bool) or not isinstance(p.max_tokens, int):
        return "invalid_request_error", "max_tokens: Field required (an integer)"
    if p.max_tokens < 1:
        return "invalid_request_error", "max_tokens: must be at least 1 in a batch"
    if spec.max_tokens is not None and p.max_tokens > spec.max_tokens:
        return "invalid_request_error", (
            f"max_tokens: {p.max_tokens} > {spec.max_tokens}, which is the maximum allowed number of "
            f"output tokens for {spec.id}"
        )
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

    def plan(
        self,
        custom_id: str,
        params: bytes,
        api_version: str,
        models: ModelCatalog | None = None,
        cache: CacheVisit | None = None,
    ) -> RequestRecord:
        """The outcome of one request: the API's own checks first (`models`: the workspace's catalogue),
        then the first matching rule. With `cache`, a succeeded request reads and writes the workspace's
        prompt cache.
        """
        digest = request_digest(custom_id, params)
        problem = params_problem(params, api_version, models)
        if problem is not None:
            return RequestRecord(custom_id, "errored", digest, error_type=problem[0], error_message=problem[1])
        rule = self._matching_rule(custom_id)
        if rule is not None and rule.outcome == "errored":
            message = rule.error_message or f"emulated {rule.error_type}"
            return RequestRecord(custom_id, "errored", digest, error_type=rule.error_type, error_message=message)
        if rule is not None and rule.outcome == "expired":
            return RequestRecord(custom_id, "expired", digest)
        record = self._succeeded(custom_id, params, digest, rule, cache)
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
    def _succeeded(
        custom_id: str, params: bytes, digest: int, rule: OutcomeRule | None, cache: CacheVisit | None = None
    ) -> RequestRecord:
        p = _params_decoder.decode(params)
        if not isinstance(p.model, str) or not isinstance(p.max_tokens, int):
            raise TypeError("plan() runs params_problem() first: model and max_tokens are checked there")
        asked = asked_schema(params) if b'"output_config"' in params or b'"tool_choice"' in params else None
        tool_name = ""
        if asked is not None:  # a deterministic object of the schema: JSON text, or the tool's input
            _form, tool_name, schema = asked
            valid = rule is None or not rule.invalid_output
            text = msgspec.json.encode(sample(schema, digest, valid=valid)).decode()
        elif rule is not None and rule.text is not None:
            text = rule.text
        elif rule is not None and rule.choices:
            text = rule.choices[digest % len(rule.choices)]
        else:
            text = f"Emulated reply {digest:016x}"
        output_tokens = min(p.max_tokens, max(1, len(text) // 4))
        stop_reason = rule.stop_reason if rule is not None else ("tool_use" if tool_name else "end_turn")
        if output_tokens == p.max_tokens and len(text) // 4 > p.max_tokens:
            stop_reason = "max_tokens"
        record = RequestRecord(
            custom_id,
            "succeeded",
            digest,
            model=p.model,
            text=text,
            stop_reason=stop_reason,
            input_tokens=tokens_of(p),
            output_tokens=output_tokens,
            tool_name=tool_name,
        )
        if cache is not None:
            # A best-effort hit (batches): read with the configured probability, decided by the digest.
            read_allowed = (digest % 10_000) < cache.hit_probability * 10_000
            use = cache.cache.use(params, cache.now, read_allowed=read_allowed, writes=cache.held_writes)
            cached = min(record.input_tokens, use.read + use.write_5m + use.write_1h)
            record.cache_read = min(use.read, cached)
            record.cache_write_1h = min(use.write_1h, cached - record.cache_read)
            record.cache_write_5m = cached - record.cache_read - record.cache_write_1h
            record.input_tokens = max(0, record.input_tokens - cached)
        return record


@dataclass(frozen=True)
class CacheVisit:
    """The prompt cache a request meets: the workspace's cache, the time, and the odds of a hit.

    `held_writes`: a list to hold the entries the request writes instead of storing them at once (a
    Messages call's entries become readable only once its answer goes out: `PromptCache.store`).
    """

    cache: PromptCache
    now: float
    hit_probability: float = 1.0
    held_writes: list[tuple[bytes, float, float]] | None = None
