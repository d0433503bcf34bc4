"""What the API would refuse in each request, decided before any batch is paid for. Pure.

The Models API's answers (`ModelInfo`, None for a model it does not know), the connection's
`anthropic-version` and the token counts in; the offending requests, named by their input line as
validation names them, out. Each rule is one function of a request's facts.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.requests.prepare import SHOWN_PROBLEMS, Problem

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from airflow_provider_claude_batch.preflight.models import ModelInfo
    from airflow_provider_claude_batch.requests.facts import RequestFacts

# API versions that refuse temperature, top_p and top_k in every request, even at their defaults.
SAMPLING_REFUSING_VERSIONS = frozenset({"2026-10-21"})
# On models that refuse non-default sampling, these values are the defaults (accepted); top_k has none.
SAMPLING_DEFAULTS: Mapping[str, float] = {"temperature": 1.0, "top_p": 1.0}
EXTENDED_OUTPUT_BETA = "output-300k-2026-03-24"
EXTENDED_OUTPUT_MAX_TOKENS = 300_000
_MODEL_VERSION = re.compile(r"claude-(?P<line>[a-z]+)-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?(?:-\d{8})?")


@dataclass(frozen=True)
class Connection:
    """What the connection sends with every request that changes what the API accepts."""

    api_version: str
    betas: tuple[str, ...] = ()

    @property
    def refuses_sampling(self) -> bool:
        """Whether this API version refuses sampling fields in every request."""
        return self.api_version in SAMPLING_REFUSING_VERSIONS


def refuses_non_default_sampling(model_id: str) -> bool:
    """Claude 4.7 and later, and Mythos Preview, answer 400 to a non-default temperature, top_p or top_k."""
    if model_id.startswith("claude-mythos-preview"):
        return True
    found = _MODEL_VERSION.fullmatch(model_id)
    if found is None:
        return False
    return (int(found["major"]), int(found["minor"] or 0)) >= (4, 7)


def _takes_one_sampling_field_only(model_id: str) -> bool:
    """Haiku 4.5 takes temperature or top_p, not both."""
    return model_id.startswith("claude-haiku-4-5")


def model_problem(model: str, info: ModelInfo | None, known_ids: Iterable[str] = ()) -> str | None:
    """Why no request naming `model` can run (unknown, retired, no batch support), or None."""
    if info is None:
        close = difflib.get_close_matches(model, list(known_ids), n=1, cutoff=0.8)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else "; check the ID (a typo, or a model not available to this key)"
        )
        return f"params.model {model!r} is not a model the API knows (Models API: not found){hint}"
    if info.lifecycle == "retired":
        return (
            f"params.model {model!r} is retired (Models API lifecycle): requests naming it fail; choose an active model"
        )
    if not info.batch:
        return f"params.model {model!r} does not support Message Batches (Models API capabilities.batch)"
    return None


def sampling_problem(sampling: Mapping[str, object], model: str, connection: Connection) -> str | None:
    """Why the sampling fields a request sets would be refused (by the API version or the model), or None."""
    names = ", ".join(sorted(sampling))
    if connection.refuses_sampling:
        return (
            f"params.{names}: anthropic-version {connection.api_version} (this connection's) refuses temperature, "
            "top_p and top_k even at their defaults; remove them (or pin anthropic-version 2023-06-01 in the "
            "connection's extra)"
        )
    if refuses_non_default_sampling(model):
        changed = [n for n, v in sampling.items() if SAMPLING_DEFAULTS.get(n) != v]
        if changed:
            return f"params.{', '.join(sorted(changed))}: {model} refuses non-default sampling values; remove them"
    if _takes_one_sampling_field_only(model) and {"temperature", "top_p"} <= set(sampling):
        return f"params.temperature and params.top_p: {model} takes one of them, not both"
    return None


def max_tokens_limit(info: ModelInfo, connection: Connection) -> int | None:
    """The largest max_tokens the model accepts in a batch (the extended-output beta raises it)."""
    if info.max_tokens is None:
        return None
    if EXTENDED_OUTPUT_BETA in connection.betas:
        return max(info.max_tokens, EXTENDED_OUTPUT_MAX_TOKENS)
    return info.max_tokens


@dataclass
class Findings:
    """The offending requests (index -> reasons) and the warnings worth a log line."""

    reasons: dict[int, list[str]]
    warnings: list[str]

    def add(self, index: int, reason: str) -> None:
        """Note one more reason request `index` would be refused."""
        self.reasons.setdefault(index, []).append(reason)

    def problems(self, facts: RequestFacts, custom_ids: Sequence[str]) -> tuple[list[Problem], int]:
        """The first offenders in input order, as validation names them, and how many there are."""
        shown = sorted(self.reasons)[:SHOWN_PROBLEMS]
        problems = [Problem(facts.lines[i], custom_ids[i], "; ".join(self.reasons[i])) for i in shown]
        return problems, len(self.reasons)


def request_findings(
    facts: RequestFacts,
    infos: Mapping[str, ModelInfo | None],
    connection: Connection,
    known_ids: Iterable[str] = (),
    *,
    unchecked: Collection[str] = (),
) -> Findings:
    """Every request a model, sampling or max_tokens rule refuses (token counts are checked apart).

    Models in `unchecked` (their lookup failed) are not judged; their requests' sampling fields are.
    """
    findings = Findings({}, [])
    verdicts = {
        model: model_problem(model, infos.get(model), known_ids) for model in facts.models if model not in unchecked
    }
    limits = {model: max_tokens_limit(info, connection) for model, info in infos.items() if info is not None}
    for model, info in infos.items():
        if info is not None and info.lifecycle == "deprecated":
            findings.warnings.append(
                f"{model} is deprecated (Models API): it still runs, but plan the move to its successor"
            )
    refused_models = {facts.models.index(m) for m, verdict in verdicts.items() if verdict is not None}
    limited = {facts.models.index(m): limit for m, limit in limits.items() if limit is not None and m in facts.models}
    needs_scan = refused_models or any(limit < _largest_max_tokens(facts, number) for number, limit in limited.items())
    if needs_scan:
        for index, (number, max_tokens) in enumerate(zip(facts.model_index, facts.max_tokens, strict=True)):
            if number in refused_models:
                findings.add(index, verdicts[facts.models[number]] or "")
            elif number in limited and max_tokens > limited[number]:
                model = facts.models[number]
                findings.add(
                    index, f"params.max_tokens {max_tokens} is over {model}'s limit of {limited[number]} (Models API)"
                )
    for index, sampling in facts.sampled():
        model = facts.model_of(index)
        reason = sampling_problem(sampling, model, connection)
        if reason is not None:
            findings.add(index, reason)
    return findings


def _largest_max_tokens(facts: RequestFacts, number: int) -> int:
    """The largest max_tokens among the requests of model `number` (one C pass when there is one model)."""
    if len(facts.models) == 1:
        return max(facts.max_tokens, default=0)
    return max((m for n, m in zip(facts.model_index, facts.max_tokens, strict=True) if n == number), default=0)


def context_findings(
    findings: Findings, counted: Mapping[int, int], facts: RequestFacts, infos: Mapping[str, ModelInfo | None]
) -> None:
    """Add every counted request whose input tokens exceed its model's context window (when reported)."""
    for index, tokens in counted.items():
        model = facts.model_of(index)
        info = infos.get(model)
        window = info.max_input_tokens if info is not None else None
        if window is not None and tokens > window:
            findings.add(
                index, f"{tokens} input tokens (counted) are over {model}'s context window of {window} (Models API)"
            )
