"""`ClaudeBatchSensor`: wait for one or many batches to end, deferred (no worker slot) or poking.

`soft_fail`, `timeout` and `mode` behave as for any Airflow sensor: a canceled batch or a wait
past the deadline fails the task, or skips it with `soft_fail=True`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.sensor import BaseSensorOperator

from airflow_provider_claude_batch._compat import AirflowException, AirflowSkipException
from airflow_provider_claude_batch.defaults import DEFAULT_CONN_ID, DEFAULT_ERROR_BUDGET, DEFAULT_MAX_POLL_INTERVAL
from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchWaitMixin,
    default_deferrable,
    normalize_batch_ids,
)
from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY, CONSOLE_LINKS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_claude_batch.wait.tracker import WaitTracker


class ClaudeBatchSensor(ClaudeBatchWaitMixin, BaseSensorOperator):
    """Wait until every batch in ``batch_ids`` has ended.

    Succeeds when all ended without a cancel. A batch canceled (in the Console, by a script, or by
    our own deadline) fails the sensor with the counts, or skips it with ``soft_fail``. Transient
    API errors (429, 5xx, network) are ridden out for ``polling_error_budget`` seconds; auth,
    permission and not-found errors end the wait at once. The sensor never cancels a batch unless
    ``cancel_on_kill=True`` and a user marks the task failed (or the wait deadline passes).
    """

    template_fields: Sequence[str] = ("batch_ids",)
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str] | Any,
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        polling_error_budget: float = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 30.0)
        super().__init__(**kwargs)
        self.batch_ids = batch_ids
        self.claude_batch_conn_id = claude_batch_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(self.poke_interval)
        self.max_poll_interval = max_poll_interval
        self.polling_error_budget = polling_error_budget
        self.cancel_on_kill = cancel_on_kill
        self.wait_timeout = timedelta(seconds=self.timeout) if self.timeout else None
        self._tracker_state: WaitTracker | None = None
        self._ids: list[str] = []
        self._context: Context | None = None

    def _ids_for(self, context: Context) -> list[str]:
        ids = normalize_batch_ids(self.batch_ids)
        if ids != self._ids:
            self._ids = ids
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        return ids

    def execute(self, context: Context) -> Any:
        self._context = context
        if not self.deferrable:
            return super().execute(context)
        ids = self._ids_for(context)
        # One look first: batches that already ended need no trip through the triggerer.
        from airflow_provider_claude_batch.wait.loop import poll_once

        tracker = self._tracker(ids, time.time() + 365 * 86400)
        decision = poll_once(self._hook(), tracker, time.time())
        if decision.outcome is not None:
            # Raised here rather than from a resumed method, so soft_fail is applied by hand, as
            # Airflow applies it on resume.
            try:
                self._finish_wait(decision.outcome.to_payload())
            except AirflowException as exc:
                if self.soft_fail:
                    raise AirflowSkipException(f"Skipping (soft_fail): {exc}") from exc
                raise
            return None
        created = [_epoch(s.created_at) for s in tracker.latest.values()]
        self.defer(
            trigger=self._trigger(ids, self._deadline(created)),
            method_name="execute_complete",
            timeout=self.wait_timeout,
        )

    def poke(self, context: Context) -> bool:
        from airflow_provider_claude_batch.wait.loop import poll_once

        self._context = context
        ids = self._ids_for(context)
        if self._tracker_state is None or self._tracker_state.batch_ids != ids:
            self._tracker_state = self._tracker(ids, time.time() + 365 * 86400)  # the sensor's timeout rules
        decision = poll_once(self._hook(), self._tracker_state, time.time())
        if decision.outcome is None:
            return False
        self._finish_wait(decision.outcome.to_payload())
        return True

    def execute_complete(self, context: Context, event: Any = None) -> None:
        self._finish_wait(event)

    def on_kill(self) -> None:
        self._cancel_if_user_failed_the_task(self._ids, self._context)


def _epoch(value: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else None
