"""What preflight refuses, request by request, from the Models API's answers and the API version. Pure."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.preflight.checks import (
    Connection,
    context_findings,
    refuses_non_default_sampling,
    request_findings,
)
from airflow_provider_claude_batch.preflight.models import ModelInfo
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.prepare import PreparedRequests
from tests.helpers import message_params

OLD_API = Connection("2023-06-01")
NEW_API = Connection("2026-10-21")


def _info(model: str, **overrides: object) -> ModelInfo:
    values: dict[str, object] = {
        "id": model,
        "display_name": model,
        "lifecycle": "active",
        "max_input_tokens": 1_000_000,
        "max_tokens": 128_000,
        "structured_outputs": True,
        "batch": True,
        "capabilities": {},
    }
    values.update(overrides)
    return ModelInfo(**values)  # type: ignore[arg-type]


def _prepared(*params: dict[str, object]) -> PreparedRequests:
    requests = [{"custom_id": f"r{i}", "params": p} for i, p in enumerate(params)]
    prepared, problems, bad = prepare_requests(list(enumerate(requests, start=1)))
    assert not bad, problems
    return prepared


def _reasons(prepared: PreparedRequests, infos: dict[str, ModelInfo | None], connection: Connection) -> list[str]:
    findings = request_findings(prepared.facts, infos, connection, ["claude-sonnet-5-5", "claude-haiku-5-5"])
    problems, _ = findings.problems(prepared.facts, prepared.custom_ids)
    return [str(p) for p in problems]


def test_an_unknown_model_names_every_request_and_suggests_the_close_id() -> None:
    prepared = _prepared(message_params(), message_params(model="claude-sonet-5-5"), message_params())
    reasons = _reasons(prepared, {"claude-sonnet-5-5": _info("claude-sonnet-5-5"), "claude-sonet-5-5": None}, OLD_API)
    assert reasons == [
        "line 2 (custom_id 'r1'): params.model 'claude-sonet-5-5' is not a model the API knows (Models API: not "
        "found); did you mean 'claude-sonnet-5-5'?"
    ]


def test_a_retired_model_or_one_without_batches_is_refused_and_a_deprecated_one_warned() -> None:
    prepared = _prepared(message_params(model="claude-old"), message_params(model="claude-nobatch"), message_params())
    infos: dict[str, ModelInfo | None] = {
        "claude-old": _info("claude-old", lifecycle="retired"),
        "claude-nobatch": _info("claude-nobatch", batch=False),
        "claude-sonnet-5-5": _info("claude-sonnet-5-5", lifecycle="deprecated"),
    }
    findings = request_findings(prepared.facts, infos, OLD_API)
    assert sorted(findings.reasons) == [0, 1]
    assert "is retired" in findings.reasons[0][0] and "does not support Message Batches" in findings.reasons[1][0]
    assert findings.warnings == [
        "claude-sonnet-5-5 is deprecated (Models API): it still runs, but plan the move to its successor"
    ]


def test_max_tokens_over_the_models_limit_is_refused_unless_the_extended_output_beta_is_on() -> None:
    prepared = _prepared(message_params(max_tokens=200_000), message_params(max_tokens=128_000))
    infos: dict[str, ModelInfo | None] = {"claude-sonnet-5-5": _info("claude-sonnet-5-5")}
    assert _reasons(prepared, infos, OLD_API) == [
        "line 1 (custom_id 'r0'): params.max_tokens 200000 is over claude-sonnet-5-5's limit of 128000 (Models API)"
    ]
    beta = Connection("2023-06-01", ("output-300k-2026-03-24",))
    assert _reasons(prepared, infos, beta) == []


def test_the_newest_api_version_refuses_sampling_fields_even_at_their_defaults() -> None:
    prepared = _prepared(message_params(temperature=1.0), message_params())
    reasons = _reasons(prepared, {"claude-sonnet-5-5": _info("claude-sonnet-5-5")}, NEW_API)
    assert len(reasons) == 1 and reasons[0].startswith("line 1 (custom_id 'r0'): params.temperature: anthropic-version")
    assert "2023-06-01" in reasons[0]


@pytest.mark.parametrize(
    ("model", "sampling", "refused"),
    [
        ("claude-sonnet-5-5", {"temperature": 0.2}, True),
        ("claude-sonnet-5-5", {"temperature": 1.0}, False),  # the default is accepted
        ("claude-opus-4-7", {"top_k": 5}, True),
        ("claude-mythos-preview", {"top_p": 0.5}, True),
        ("claude-sonnet-4-5", {"temperature": 0.2}, False),  # before 4.7
        ("claude-haiku-4-5", {"temperature": 0.2, "top_p": 0.9}, True),  # one of them, not both
        ("claude-haiku-4-5-20251001", {"temperature": 0.2}, False),
    ],
)
def test_models_from_4_7_refuse_non_default_sampling_on_the_older_api_version(
    model: str, sampling: dict[str, object], refused: bool
) -> None:
    prepared = _prepared(message_params(model=model, **sampling))
    assert bool(_reasons(prepared, {model: _info(model)}, OLD_API)) is refused


def test_model_versions_are_read_from_the_id() -> None:
    assert refuses_non_default_sampling("claude-opus-4-8") and refuses_non_default_sampling("claude-fable-5")
    assert not refuses_non_default_sampling("claude-opus-4-6") and not refuses_non_default_sampling("claude-3-7-sonnet")


def test_a_counted_request_over_the_context_window_is_refused() -> None:
    prepared = _prepared(message_params(), message_params(), message_params(model="claude-unknown-window"))
    infos: dict[str, ModelInfo | None] = {
        "claude-sonnet-5-5": _info("claude-sonnet-5-5", max_input_tokens=1000),
        "claude-unknown-window": _info("claude-unknown-window", max_input_tokens=None),
    }
    findings = request_findings(prepared.facts, infos, OLD_API)
    context_findings(findings, {0: 999, 1: 1001, 2: 10**9}, prepared.facts, infos)
    problems, bad = findings.problems(prepared.facts, prepared.custom_ids)
    assert bad == 1 and str(problems[0]) == (
        "line 2 (custom_id 'r1'): 1001 input tokens (counted) are over claude-sonnet-5-5's context window of 1000 "
        "(Models API)"
    )


def test_an_unchecked_model_is_not_judged_and_problems_stop_at_ten_named() -> None:
    prepared = _prepared(*[message_params(model="claude-typo") for _ in range(12)])
    assert request_findings(prepared.facts, {}, OLD_API, unchecked={"claude-typo"}).reasons == {}
    findings = request_findings(prepared.facts, {"claude-typo": None}, OLD_API)
    problems, bad = findings.problems(prepared.facts, prepared.custom_ids)
    assert bad == 12 and len(problems) == 10 and problems[0].line == 1
