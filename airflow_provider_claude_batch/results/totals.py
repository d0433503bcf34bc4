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
            self.usage_of(model).add(usage)
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

    def usage_of(self, model: str) -> Usage:
        """`model`'s usage, to count into (a new one the first time)."""
        usage = self.usage_by_model.get(model)
        if usage is None:
            usage = self.usage_by_model[model] = Usage()
        return usage

    def usage_total(self) -> dict[str, int]:
        """Token counts over every model, as the manifest's `usage_total`."""
        total = Usage()
        for usage in self.usage_by_model.values():
            total.add(usage)
        return total.reported()
