"""Names the package takes from Airflow that moved between 3.0 and 3.1 (the floor is 3.0).

Airflow 3.1 made `airflow.sdk` the one public home of the hook base class, the config object, the
exceptions and the decorator helpers; 3.0 still keeps them in `airflow.*`. Importing from here keeps
one place that knows where each name lives, newest home first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import BaseHook, conf
    from airflow.sdk.bases.decorator import determine_kwargs
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
        from airflow.sdk.bases.decorator import determine_kwargs
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
        from airflow.utils.operator_helpers import determine_kwargs



async def aget_connection(hook: BaseHook, conn_id: str) -> Any:
    """The connection, looked up without blocking the event loop: `aget_connection` on Airflow 3.1+;
    on 3.0, which has no async lookup, the sync one through `sync_to_async` (as 3.0's triggerer needs)."""
    lookup = getattr(hook, "aget_connection", None)
    if lookup is not None:
        return await lookup(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)


__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "aget_connection",
    "conf",
    "context_merge",
    "determine_kwargs",
]
