"""The land step: ended batches' results into files under the output, the manifest last.

`Landing` holds what and how to land (formats, the failure policy, prices) and calls
`output.land.land_results` / `output.rounds.finalize_rounds` through a hook; the results
operator and the one-task operator compose it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.land import LandingSettings
    from airflow_provider_claude_batch.requests.structured import OutputSpec
    from airflow_provider_claude_batch.results.checks import ExpectedResults


class TaskLog(Protocol):
    """The task's logger (stdlib or Airflow's structlog-backed one): what the report writes to."""

    def info(self, msg: str, /, *args: object) -> object:
        """Log at INFO."""

    def warning(self, msg: str, /, *args: object) -> object:
        """Log at WARNING."""


# A manifest as written to `_manifest.json` (JSON: its values are of many types).
Manifest = dict[str, Any]
ROUND_FORMATS = ("jsonl", "csv")
SUMMARY_KEYS = ("output_path", "requests", "counts", "failed", "failed_fraction", "usage_total", "cost")


@dataclass(frozen=True)
class LandingPolicy:
    """Rarely changed landing knobs.

    :param expiry_warning: warn in the log when a batch's results expire (29 days after it was
        created) within this long; results past that are gone (`ResultsArchivedError`).
    :param price_overrides: ``{model: {"input": $/MTok, "output": ..., ...}}`` for models the
        built-in dated price table lacks or prices differently; wrong prices make every dollar
        figure of the manifest wrong (tokens are reported either way).
    :param concurrency: how many batches' results are read from the API at once: the next ones are
        downloaded to local staging files while the current one is folded (memory stays flat; local disk
        holds up to ``concurrency - 1`` batches' raw results ahead). 1: one after the other.
    """

    expiry_warning: timedelta = timedelta(days=3)
    price_overrides: Mapping[str, Mapping[str, float]] | None = None
    concurrency: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency is a number of batches (at least 1), not {self.concurrency!r}")
        if self.expiry_warning.total_seconds() < 0:
            raise ValueError(f"expiry_warning cannot be negative ({self.expiry_warning}); use timedelta(0) for none")


@dataclass(frozen=True)
class Landing:
    """The land step: formats, the failure policy, and the landing policy.

    Formats and prices are checked when the task runs (`BatchInputError`, before any API call), so a
    DAG with a misspelt format still parses and shows the error in its task's log.
    """

    formats: tuple[str, ...] = ("jsonl",)
    max_failed_fraction: float | None = None
    policy: LandingPolicy = field(default_factory=LandingPolicy)
    # A Pydantic model class or a JSON schema dict: each succeeded result is validated against it.
    output_type: Any = None

    def __post_init__(self) -> None:
        from airflow_provider_claude_batch.requests.output_type import check_output_type

        check_output_type(self.output_type)
        if self.max_failed_fraction is not None and not 0 <= self.max_failed_fraction <= 1:
            raise ValueError(
                f"max_failed_fraction is a fraction of requests (0.05 for 5%), not {self.max_failed_fraction}"
            )

    def settings(self, formats: Sequence[str] | None = None) -> LandingSettings:
        """`land_results`' settings for these formats (default: the step's)."""
        from airflow_provider_claude_batch.output.land import LandingSettings
        from airflow_provider_claude_batch.results.pricing import prices_from_overrides

        overrides = self.policy.price_overrides
        return LandingSettings(
            formats=tuple(self.formats if formats is None else formats),
            expiry_warning_seconds=self.policy.expiry_warning.total_seconds(),
            prices=prices_from_overrides(overrides) if overrides else None,
            output=spec_of(self.output_type),
            concurrency=self.policy.concurrency,
        )

    def land(
        self,
        hook: ClaudeBatchHook,
        batch_ids: Sequence[str],
        output: ObjectStoragePath,
        *,
        expected: Mapping[str, ExpectedResults] | None = None,
        estimate: Mapping[str, Any] | None = None,
        warmup: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Land `batch_ids` under `output` in the step's formats (with preflight's `estimate`); returns the manifest."""
        from airflow_provider_claude_batch.output.land import land_results

        return land_results(
            hook, batch_ids, output, self.settings(), expected=expected, estimate=estimate, warmup=warmup
        )

    def land_round(
        self,
        hook: ClaudeBatchHook,
        batch_ids: Sequence[str],
        folder: ObjectStoragePath,
        *,
        within: ObjectStoragePath,
        expected: Mapping[str, ExpectedResults] | None = None,
        warmup: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Land one resubmission round under `folder` (raw and JSONL only: the rounds are merged later)."""
        from airflow_provider_claude_batch.output.land import land_results

        settings = self.settings(formats=("jsonl",))
        return land_results(hook, batch_ids, folder, settings, expected=expected, within=within, warmup=warmup)

    def refuse_unwritable_round_formats(self) -> None:
        """Rounds' final files are written as jsonl/csv only: refuse others before anything is paid for."""
        from airflow_provider_claude_batch.exceptions import BatchInputError

        unwritten = sorted(set(self.formats) - set(ROUND_FORMATS))
        if unwritten:
            known = "Unknown output format(s)" if set(unwritten) - {"parquet"} else "Output format(s)"
            raise BatchInputError(
                f"{known} {unwritten}: the one-task flow writes jsonl and csv (parquet only "
                "from ClaudeBatchResultsOperator without retry rounds). Nothing was submitted."
            )

    def summary(self, manifest: Mapping[str, Any], output: ObjectStoragePath, batch_ids: list[str]) -> Manifest:
        """Apply the failure policy (after landing) and return the manifest's summary for XCom."""
        from airflow_provider_claude_batch.exceptions import TooManyFailuresError

        fraction = manifest["failed_fraction"]
        if self.max_failed_fraction is not None and fraction > self.max_failed_fraction:
            raise TooManyFailuresError(
                f"{manifest['failed']} of {manifest['requests']} requests failed ({fraction:.1%} > "
                f"max_failed_fraction {self.max_failed_fraction:.1%}); the results were landed under {output}.",
                batch_ids,
            )
        summary = {k: manifest[k] for k in SUMMARY_KEYS}
        if "structured_output" in manifest:
            summary |= {k: manifest["structured_output"][k] for k in ("validated", "invalid_output")}
        if "rounds" in manifest:
            summary["rounds"] = [
                {k: r[k] for k in ("round", "batch_ids", "requests", "counts")} for r in manifest["rounds"]
            ]
        if "routes" in manifest:
            summary["routes"] = manifest["routes"]
        return summary | {"batch_ids": batch_ids}


def spec_of(output_type: object) -> OutputSpec | None:
    """The spec of an output_type (None for none); a schema that cannot be used is refused before any call."""
    if output_type is None:
        return None
    from airflow_provider_claude_batch.exceptions import BatchInputError
    from airflow_provider_claude_batch.requests.structured import output_spec

    try:
        return output_spec(output_type)
    except (TypeError, ValueError) as exc:
        raise BatchInputError(f"{exc}; nothing was submitted or landed.") from None


def landed_manifest(folder: ObjectStoragePath, batch_ids: Sequence[str]) -> Manifest | None:
    """The folder's manifest if it was already landed from exactly these batches (a retry re-uses it)."""
    import msgspec

    from airflow_provider_claude_batch.storage import read_bytes_if_exists

    data = read_bytes_if_exists(folder / "_manifest.json")
    if data is None:
        return None
    manifest: Manifest = msgspec.json.decode(data)
    return manifest if [b["id"] for b in manifest.get("batches", [])] == list(batch_ids) else None


def report_manifest(log: TaskLog, manifest: Mapping[str, Any]) -> None:
    """The landing's summary in the task log: counts, tokens, dollars at batch vs standard price."""
    cost = manifest["cost"]
    usage = manifest["usage_total"]
    log.info(
        "Landed %d results under %s: %s",
        manifest["requests"],
        manifest["output_path"],
        ", ".join(f"{n} {k}" for k, n in manifest["counts"].items() if n),
    )
    log.info(
        "Tokens: %d input, %d output, %d cache writes (5m) + %d (1h), %d cache reads",
        usage.get("input_tokens", 0),
        usage.get("output_tokens", 0),
        usage.get("cache_write_5m_tokens", 0),
        usage.get("cache_write_1h_tokens", 0),
        usage.get("cache_read_tokens", 0),
    )
    log.info(
        "Cost: $%.4f at batch price; $%.4f at standard price; saved $%.4f (prices as of %s)",
        cost["batch_usd"],
        cost["standard_usd"],
        cost["savings_usd"],
        cost["prices_as_of"],
    )
    estimate = manifest.get("estimate")
    if estimate is not None:
        log.info(
            "Estimated before submitting: $%.4f to $%.4f at batch price for %d input tokens (%s); actual: $%.4f "
            "for %d input and %d output tokens",
            estimate["batch_usd_low"],
            estimate["batch_usd_high"],
            estimate["input_tokens"],
            estimate["method"],
            estimate["actual_batch_usd"],
            estimate["actual_input_tokens"],
            estimate["actual_output_tokens"],
        )
        if abs(estimate["actual_paid_usd"] - estimate["actual_batch_usd"]) > 5e-7:
            log.info(
                "Paid $%.4f (the Messages API's rows at the standard price); estimated $%.4f to $%.4f at the "
                "prices paid",
                estimate["actual_paid_usd"],
                estimate["paid_usd_low"],
                estimate["paid_usd_high"],
            )
    report_caching(log, manifest.get("caching"))
    routes = manifest.get("routes", {})
    if routes.get("sync", {}).get("requests"):
        log.info(
            "Routes: %d rows through batches ($%.4f), %d through the Messages API ($%.4f at standard price); "
            "paid $%.4f where batches alone would have cost $%.4f: a deadline premium of $%.4f",
            routes["batch"]["requests"],
            routes["batch"]["usd"],
            routes["sync"]["requests"],
            routes["sync"]["usd"],
            cost["paid_usd"],
            cost["batch_only_usd"],
            cost["deadline_premium_usd"],
        )
    if cost["unpriced_models"]:
        log.warning(
            "No price known for %s: their tokens are reported without dollars; pass price_overrides to price them",
            ", ".join(cost["unpriced_models"]),
        )
    if manifest["failed"]:
        log.warning(
            "%d of %d requests failed (%s); their rows are in failures.jsonl",
            manifest["failed"],
            manifest["requests"],
            ", ".join(f"{n} {k}" for k, n in manifest["error_types"].items()) or "canceled/expired",
        )


def report_caching(log: TaskLog, caching: Mapping[str, Any] | None) -> None:
    """Prompt caching's line of the report: hits, tokens, and what it saved against a batch without it."""
    total = (caching or {}).get("total")
    if not total or not (total["requests_caching"] or (caching or {}).get("warmup")):
        return
    rate = total["hit_rate"]
    log.info(
        "Prompt caching: %d of %d requests read the cache (hit rate %s), %d tokens read, %d written; paid $%.4f "
        "(warm-up $%.4f) vs $%.4f in a batch without caching, $%.4f at standard price: caching saved $%.4f",
        total["requests_reading"],
        total["requests_caching"],
        "n/a" if rate is None else f"{rate:.0%}",
        total["cache_read_tokens"],
        total["cache_write_tokens"],
        total["paid_usd"],
        total["warmup_usd"],
        total["batch_without_caching_usd"],
        total["standard_without_caching_usd"],
        total["saved_usd"],
    )
