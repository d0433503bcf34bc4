"""What a landing counts as it folds results: results by type, errors, problems and each model's usage.

Pure: the fold (results/fold.py) counts into these; the manifest and the cost are made from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_claude_batch.results.pricing import Usage

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
FAILED_TYPES = ("errored", "canceled", "expired")
LONG_PROMPT_TOKENS = 100_000
# Result problems the manifest flags (their rows are landed as served, their usage is left out of
# the totals and the cost, which the manifest then marks incomplete).
UNKNOWN_RESULT_TYPE = "unknown_result_type"
SUCCEEDED_WITHOUT_USAGE = "succeeded_without_usage"
NEGATIVE_USAGE = "negative_usage"
EXAMPLES_KEPT = 5
# The error_type of a succeeded result whose output does not validate against the output_type: a failure.
INVALID_OUTPUT = "invalid_output"


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


class ModelSums:
    """One model's token sums over a run of succeeded results, in plain attributes; counted into
    `totals` when the model changes and at the end of the block (`close`).
    """

    def __init__(self, totals: Totals) -> None:
        self.totals = totals
        self.model: str | None = None
        self.requests = self.input_tokens = self.output_tokens = 0
        self.write_5m = self.write_1h = self.read = self.cache_requests = self.cache_read_requests = 0
        self.long_input_tokens = self.long_output_tokens = 0
        self.negative = 0  # succeeded results flagged for negative usage (counted, their usage left out)
        self.succeeded = 0

    def count_cache(self, write_5m: int, write_1h: int, read: int) -> None:
        """A result that touched the prompt cache."""
        self.write_5m += write_5m
        self.write_1h += write_1h
        self.read += read
        self.cache_requests += 1
        self.cache_read_requests += read > 0

    def switch(self, model: str) -> None:
        """Count the sums so far into their model's usage, and start summing `model`'s."""
        if self.model is not None and self.requests:
            usage = self.totals.usage_by_model.get(self.model)
            if usage is None:
                usage = self.totals.usage_by_model[self.model] = Usage()
            usage.requests += self.requests
            usage.input_tokens += self.input_tokens
            usage.output_tokens += self.output_tokens
            usage.cache_write_5m_tokens += self.write_5m
            usage.cache_write_1h_tokens += self.write_1h
            usage.cache_read_tokens += self.read
            usage.cache_requests += self.cache_requests
            usage.cache_read_requests += self.cache_read_requests
            usage.long_prompt_input_tokens += self.long_input_tokens
            usage.long_prompt_output_tokens += self.long_output_tokens
        self.succeeded += self.requests
        self.model = model
        self.requests = self.input_tokens = self.output_tokens = 0
        self.write_5m = self.write_1h = self.read = self.cache_requests = self.cache_read_requests = 0
        self.long_input_tokens = self.long_output_tokens = 0

    def close(self) -> None:
        """Count what is left, and the succeeded results of the block."""
        self.switch("")
        succeeded = self.succeeded + self.negative
        if succeeded:
            self.totals.counts["succeeded"] = self.totals.counts.get("succeeded", 0) + succeeded
