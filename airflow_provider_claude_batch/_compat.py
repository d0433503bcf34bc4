"""Every Airflow name the package takes that moved between 3.0 and 3.1, or that is not public API.

Airflow 3.1 made `airflow.sdk` the one public home of the hook base class, the config object, the
exceptions and the decorator helpers; 3.0 still keeps them in `airflow.*`. Importing from here keeps
one place that knows where each name lives, newest home first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from airflow.sdk import BaseHook, conf
    from airflow.sdk.definitions.context import context_merge
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
else:
    try:  # Airflow >= 3.1
        from airflow.sdk import BaseHook, conf
        from airflow.sdk.definitions.context import context_merge
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )
    except ImportError:  # Airflow 3.0
        from airflow.configuration import conf
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )
        from airflow.hooks.base import BaseHook
        from airflow.utils.context import context_merge


def determine_kwargs(func: Callable[..., Any], args: Collection[Any], kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Which of the context's keys `func` takes. Imported when called: its module (Airflow's decorator
    base) costs more than the rest of a DAG file's imports of this package together.
    """
    try:  # Airflow >= 3.1
        from airflow.sdk.bases.decorator import determine_kwargs as determine
    except ImportError:  # Airflow 3.0
        from airflow.utils.operator_helpers import determine_kwargs as determine  # type: ignore[attr-defined]
    return determine(func, args, kwargs)


async def aget_connection(hook: BaseHook, conn_id: str) -> Any:
    """The connection, looked up without blocking the event loop: `aget_connection` on Airflow 3.1+;
    on 3.0, which has no async lookup, the sync one through `sync_to_async` (as 3.0's triggerer needs).
    """
    lookup = getattr(hook, "aget_connection", None)
    if lookup is not None:
        return await lookup(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)


def current_task_state(ti: Any) -> str | None:
    """The state of `ti` (anything with dag_id, task_id, run_id, map_index) now; None if unknown.

    Private Airflow API (the Task SDK's runtime task instance): no public call answers this yet.
    Raises what the lookup raises: callers decide how to log it (and never cancel on doubt).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(
        dag_id=ti.dag_id, map_index=ti.map_index, task_ids=[ti.task_id], run_ids=[ti.run_id]
    )
    key = ti.task_id if (ti.map_index is None or ti.map_index < 0) else f"{ti.task_id}_{ti.map_index}"
    state = states.get(ti.run_id, {}).get(key)
    return str(getattr(state, "value", state)) if state is not None else None


# ---- not public API: each is imported where used, so that parsing a DAG file does not load it ----


def is_resolvable(value: object) -> bool:
    """Whether `value` is a runtime reference (an XComArg and the like) that resolves against a context."""
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

    return isinstance(value, ResolveMixin)


def resolve(value: Any, context: Any) -> Any:
    """`value` resolved against `context` if it is a runtime reference, else `value` unchanged."""
    return value.resolve(context) if is_resolvable(value) else value


def link_upstream(operator: Any, value: object) -> None:
    """Set the upstream dependency an XComArg given to a non-templated argument implies."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    XComArg.apply_upstream_relationship(operator, value)


def plain_xcom_source(value: object) -> tuple[str, str] | None:
    """(task_id, key) of a plain ``task.output``-style XComArg; None for anything else."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    if isinstance(value, PlainXComArg):
        return str(value.operator.task_id), str(value.key)
    return None


def xcom_value(ti_key: Any, key: str) -> Any:
    """An XCom value by task instance key, as an operator link reads it in the API server."""
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key=key)


def never_expire() -> Any:
    """The task state store's retention for rows that must outlive any cleanup schedule."""
    from airflow.sdk.execution_time.context import NEVER_EXPIRE

    return NEVER_EXPIRE


def mask_secret(value: str) -> None:
    """Register `value` with Airflow's log masker."""
    from airflow.sdk.log import mask_secret as register

    register(value)


# ---- the API server's side (the Claude Batches view): not public API either ----


def auth_manager() -> Any:
    """The API server's auth manager (its public methods: `get_user_from_token`, `get_url_login`,
    `get_authorized_dag_ids`).
    """
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def jwt_cookie_name() -> str:
    """The cookie in which Airflow's UI keeps the logged-in user's token ("_token" on 3.0 to 3.3)."""
    try:
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    except ImportError:  # pragma: no cover - moved or renamed in a later Airflow
        return "_token"
    return str(COOKIE_NAME_JWT_TOKEN)


def xcom_rows(
    keys: tuple[str, ...], dag_ids: set[str], since: float, task_ids: set[str] | None = None
) -> list[tuple[Any, ...]]:
    """(dag_id, run_id, task_id, map_index, key, value, epoch seconds) of the XComs with these keys
    in these DAGs (and tasks, if given) written since `since`, read from the metadata database.
    """
    import datetime as dt

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    if not dag_ids:
        return []
    model: Any = XComModel
    after = dt.datetime.fromtimestamp(since, dt.UTC)
    query_filter = [model.key.in_(keys), model.dag_id.in_(sorted(dag_ids)), model.timestamp >= after]
    if task_ids is not None:
        query_filter.append(model.task_id.in_(sorted(task_ids)))
    with create_session() as session:
        rows = (
            session.query(
                model.dag_id, model.run_id, model.task_id, model.map_index, model.key, model.value, model.timestamp
            )
            .filter(*query_filter)
            .all()
        )
    return [
        (r.dag_id, r.run_id, r.task_id, r.map_index, r.key, XComModel.deserialize_value(r), r.timestamp.timestamp())
        for r in rows
    ]


def connection_ids(conn_type: str) -> list[str]:
    """The IDs of the connections of this type in the metadata database (not those of secrets backends)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    model: Any = Connection
    with create_session() as session:
        rows = session.query(model.conn_id).filter(model.conn_type == conn_type).all()
    return sorted(str(r.conn_id) for r in rows)


__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "aget_connection",
    "auth_manager",
    "conf",
    "connection_ids",
    "context_merge",
    "current_task_state",
    "determine_kwargs",
    "is_resolvable",
    "jwt_cookie_name",
    "link_upstream",
    "mask_secret",
    "never_expire",
    "plain_xcom_source",
    "resolve",
    "xcom_rows",
    "xcom_value",
]
