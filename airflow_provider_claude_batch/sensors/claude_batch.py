"""`ClaudeBatchSensor`: wait for one or many batches to end, deferred (no worker slot) or poking.

`soft_fail`, `timeout` and `mode` behave as for any Airflow sensor: a canceled batch or a wait
past the deadline fails the task, or skips it with `soft_fail=True`.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.sensor import BaseSensorOperator

from airflow_provider_claude_batch._compat import AirflowException, AirflowSkipException
from airflow_provider_claude_batch.defaults import DEFAULT_CONN_ID
from airflow_provider_claude_batch.operators.common import (
    LANDING_PARAMETERS,
    default_deferrable,
    make_hook,
    normalize_batch_ids,
    reject_foreign_parameters,
    submit_parameters,
)
from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY, CONSOLE_LINKS
from airflow_provider_claude_batch.wait.waiting import Waiting, WaitPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_claude_batch.wait.tracker import WaitTracker

# Poke mode and the first look take the deadline from the sensor's own timeout rules.
NO_DEADLINE = 365 * 86400.0


class ClaudeBatchSensor(BaseSensorOperator):
    """Wait until every batch in ``batch_ids`` has ended.

    Succeeds when all ended without a cancel. A batch canceled (in the Console, by a script, or by
    our own deadline) fails the sensor with the counts, or skips it with ``soft_fail``. Transient
    API errors (429, 5xx, network) are ridden out for the wait policy's ``error_budget``; auth,
    permission and not-found errors end the wait at once. ``poke_interval`` is the first poll
    interval and ``timeout`` the wait's timeout, as for any sensor.

    :param batch_ids: a batch ID, a list (``submit.output``) or a comma-separated string (templated);
        each is checked to be a Message Batch ID before any call.
    :param claude_batch_conn_id: the Claude Batch connection (key, workspace, base URL).
    :param deferrable: wait in the triggerer (no worker slot held) instead of poking; default
        ``[operators] default_deferrable``.
    :param wait_policy: a `WaitPolicy` (max poll interval, error budget); its ``timeout`` stays unset:
        the sensor's ``timeout`` is the wait's.
    :param cancel_on_kill: cancel unfinished batches when a user marks the task failed, or the wait's
        timeout passes (stops spending; what finished is still landable). Off by default: the sensor
        waits on batches another task paid for.
    """

    template_fields: Sequence[str] = ("batch_ids",)
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str],
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        wait_policy: WaitPolicy | None = None,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        reject_foreign_parameters(type(self).__name__, kwargs, {**submit_parameters(), **LANDING_PARAMETERS})
        kwargs.setdefault("poke_interval", 30.0)
        super().__init__(**kwargs)
        policy = wait_policy or WaitPolicy()
        if policy.timeout is not None:
            raise ValueError("The sensor's wait ends at its own timeout=...: leave WaitPolicy(timeout=...) unset")
        timeout = timedelta(seconds=self.timeout) if self.timeout else None
        self.batch_ids = batch_ids
        self.claude_batch_conn_id = claude_batch_conn_id
        self.waiting = Waiting(
            claude_batch_conn_id,
            default_deferrable() if deferrable is None else deferrable,
            float(self.poke_interval),
            cancel_on_kill,
            dataclasses.replace(policy, timeout=timeout),
        )
        self._tracker_state: WaitTracker | None = None
        self._ids: list[str] = []
        self._context: Context | None = None

    def _ids_for(self, context: Context) -> list[str]:
        ids = normalize_batch_ids(self.batch_ids)
        if ids != self._ids:
            self._ids = ids
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        return ids

    def execute(self, context: Context) -> None:
        """Poke, or (deferrable) look once and hand the wait to the triggerer."""
        from airflow_provider_claude_batch.wait.loop import poll_once

        self._context = context
        if not self.waiting.deferrable:
            super().execute(context)
            return
        ids = self._ids_for(context)
        hook = make_hook(self.claude_batch_conn_id)
        # One look first: batches that already ended need no trip through the triggerer.
        tracker = self.waiting.tracker(ids, time.time() + NO_DEADLINE)
        decision = poll_once(hook, tracker, time.time())
        if decision.outcome is not None:
            # Raised here rather than from a resumed method, so soft_fail is applied by hand, as
            # Airflow applies it on resume.
            try:
                self.waiting.finish(hook, decision.outcome.to_payload())
            except AirflowException as exc:
                if self.soft_fail:
                    raise AirflowSkipException(f"Skipping (soft_fail): {exc}") from exc
                raise
            return
        created = [_epoch(s.created_at) for s in tracker.latest.values()]
        self.defer(
            trigger=self.waiting.trigger(ids, self.waiting.deadline(created)),
            method_name="execute_complete",
            timeout=self.waiting.policy.timeout,
        )

    def poke(self, context: Context) -> bool:
        """One poll of the pending batches; True once all ended without a cancel."""
        from airflow_provider_claude_batch.wait.loop import poll_once

        self._context = context
        ids = self._ids_for(context)
        if self._tracker_state is None or self._tracker_state.batch_ids != ids:
            self._tracker_state = self.waiting.tracker(ids, time.time() + NO_DEADLINE)
        hook = make_hook(self.claude_batch_conn_id)
        decision = poll_once(hook, self._tracker_state, time.time())
        if decision.outcome is None:
            return False
        self.waiting.finish(hook, decision.outcome.to_payload())
        return True

    def execute_complete(self, context: Context, event: object = None) -> None:
        """Resumed when the trigger's wait ended: success only when every batch ended without a cancel."""
        self.waiting.finish(make_hook(self.claude_batch_conn_id), event)

    def on_kill(self) -> None:
        """Cancel the batches only when a user marked the task failed (and ``cancel_on_kill``)."""
        self.waiting.cancel_if_user_failed_the_task(make_hook(self.claude_batch_conn_id), self._ids, self._context)


def _epoch(value: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else None
