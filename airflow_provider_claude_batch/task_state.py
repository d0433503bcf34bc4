"""Read a task instance's current state from the API server: how `on_kill` tells a user's
"mark failed" (stop spending) from a clear, a "mark success" or a restart (keep the batches)."""

from __future__ import annotations

from typing import Any


def current_task_state(ti: Any) -> str | None:
    """The state of `ti` (anything with dag_id, task_id, run_id, map_index) now; None if unknown.

    Raises what the lookup raises: callers decide how to log it (and never cancel on doubt).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=ti.dag_id, map_index=ti.map_index,
                                                 task_ids=[ti.task_id], run_ids=[ti.run_id])
    key = ti.task_id if (ti.map_index is None or ti.map_index < 0) else f"{ti.task_id}_{ti.map_index}"
    state = states.get(ti.run_id, {}).get(key)
    return str(getattr(state, "value", state)) if state is not None else None
