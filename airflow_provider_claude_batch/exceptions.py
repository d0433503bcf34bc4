"""Two families of errors, so the message (and the on-call engineer) knows whether money is at stake.

- `BatchInputError`: raised before any API call. Nothing was submitted or spent; fix the input.
- `BatchInFlightError`: raised after submission. Batches exist and may be billed; the message names
  them, and nothing here cancels them unless the user asked for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_claude_batch._compat import AirflowException, AirflowFailException, AirflowSensorTimeout
from airflow_provider_claude_batch.hooks.api_errors import mask_secrets

if TYPE_CHECKING:
    from collections.abc import Sequence


class ClaudeBatchError(AirflowException):
    """Base of every error this provider raises on purpose; its text is masked (`mask_secrets`), so a
    key pasted into the wrong connection field never comes back in a task's failure.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_secrets(a) if isinstance(a, str) else a for a in args))


class BatchInputError(ClaudeBatchError, AirflowFailException):
    """The input is wrong; nothing was sent. Not retried: a retry would fail the same way."""


class InvalidRequestsError(BatchInputError):
    """Some requests are malformed; the message counts them and names the first offenders."""

    verdict = "are invalid"

    def __init__(self, problems: Sequence[str], bad_count: int, total: int) -> None:
        shown = "\n".join(f"  - {p}" for p in problems)
        more = f"\n  ... and {bad_count - len(problems)} more" if bad_count > len(problems) else ""
        super().__init__(
            f"{bad_count} of {total} requests {self.verdict}; nothing was submitted. First offenders:\n{shown}{more}"
        )
        self.problems = list(problems)
        self.bad_count = bad_count
        self.total = total


class PreflightRefusedError(InvalidRequestsError):
    """Preflight (free calls to the Models API and token counting) found requests the API would refuse:
    an unknown or retired model, sampling fields the API version or model refuses, max_tokens over the
    model's limit, a prompt over its context window. Named by line, like invalid input; nothing was sent.
    """

    verdict = "would be refused by the API (preflight)"


class BudgetExceededError(BatchInputError):
    """The cost estimate's low figure is over ``max_cost_usd`` (or cannot be priced); nothing was sent."""


class BatchInFlightError(ClaudeBatchError):
    """Something went wrong after batches were submitted; `batch_ids` says which ones exist."""

    def __init__(self, message: str, batch_ids: Sequence[str] = ()) -> None:
        suffix = f" Batches: {', '.join(batch_ids)}." if batch_ids else ""
        super().__init__(message + suffix)
        self.batch_ids = list(batch_ids)


class BatchCanceledError(BatchInFlightError, AirflowFailException):
    """A batch ended canceled (by a user, outside Airflow, or on our deadline): never a silent success.

    Not retried (a canceled batch stays canceled); a sensor with soft_fail skips instead.
    """


class CanaryFailedError(BatchInFlightError, AirflowFailException):
    """Requests of the canary batch errored for reasons a retry would meet again (an invalid request,
    a refused model...): the rest was not submitted. Only the canary was paid for; its batch is named.
    """


class BatchWaitTimeoutError(BatchInFlightError, AirflowSensorTimeout):
    """The wall-clock deadline passed before every batch ended (a sensor with soft_fail skips)."""


class BatchApiError(BatchInFlightError):
    """The API stayed unavailable for longer than the polling error budget. Retrying re-attaches."""


class BatchApiRefusedError(BatchApiError, AirflowFailException):
    """The API refused to report on a batch (auth, permission, not found): waiting will not help."""


class ResultsOriginRefusedError(BatchInFlightError, AirflowFailException):
    """The API named a `results_url` on another origin than the connection's base URL: the key is
    not sent there. A retry would get the same URL.
    """


class ResultsArchivedError(BatchInFlightError, AirflowFailException):
    """The API no longer holds the results (29 days after creation): a retry cannot help."""


class TooManyFailuresError(BatchInFlightError):
    """More requests failed than `max_failed_fraction` allows; the results were landed first."""


class ResultsMismatchError(BatchInFlightError):
    """A results stream is not exactly one result per submitted custom_id (a duplicate, a missing
    one, one never submitted). Nothing was published; a retry reads the stream again.
    """


class StateNotSharedError(BatchInputError):
    """The submission record would live where a retry on another worker cannot read it; nothing was sent."""


class SubmissionRecordError(ClaudeBatchError, AirflowFailException):
    """The submission record cannot be read or written. Not retried: a try that cannot see the record
    could pay again for batches that already exist; the message says where it is and what to do.
    """
