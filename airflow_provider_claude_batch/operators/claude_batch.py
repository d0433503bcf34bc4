"""The operators' public import path: the three operators and the policies their parameters take.

`ClaudeBatchSubmitOperator` (operators/submit.py), `ClaudeBatchResultsOperator` (operators/results.py)
and `ClaudeBatchOperator` (operators/one_task.py) compose the steps `Submission`, `Waiting` and
`Landing` rather than inheriting from each other.
"""

from airflow_provider_claude_batch.operators.common import SUBMISSION_RECORD_XCOM_KEY, normalize_batch_ids
from airflow_provider_claude_batch.operators.one_task import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.results import ClaudeBatchResultsOperator
from airflow_provider_claude_batch.operators.submit import ClaudeBatchSubmitOperator
from airflow_provider_claude_batch.output.landing import LandingPolicy
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.submission import QueuePolicy, Submission
from airflow_provider_claude_batch.sync.routing import SyncPolicy
from airflow_provider_claude_batch.wait.waiting import WaitPolicy

__all__ = [
    "SUBMISSION_RECORD_XCOM_KEY",
    "ClaudeBatchOperator",
    "ClaudeBatchResultsOperator",
    "ClaudeBatchSubmitOperator",
    "CreatePolicy",
    "LandingPolicy",
    "QueuePolicy",
    "Submission",
    "SyncPolicy",
    "WaitPolicy",
    "normalize_batch_ids",
]
