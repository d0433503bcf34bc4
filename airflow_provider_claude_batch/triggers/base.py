"""The one base of our triggers: each trigger is a short declaration, checked when its class is defined.

A trigger declares the `classpath` it is stored under and the `fields` it serializes; the base
serializes them, gives `wait` the connection's shared client (one per connection and event loop,
see `wait.poller`), masks the text of a connection that cannot be built, and yields exactly one
event. A declaration that could not be rebuilt from the database (a field `__init__` does not take
or does not set, a parameter that is not serialized, a classpath that does not name the class)
raises `TypeError` at import, in the DAG processor and the worker, not in the triggerer.
"""

from __future__ import annotations

import dis
import inspect
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_claude_batch.hooks.api_errors import mask_secrets
from airflow_provider_claude_batch.wait.poller import SharedPoller, shared_poller

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from anthropic import AsyncAnthropic

    from airflow_provider_claude_batch.wait.events import ErrorKind

_ABSTRACT = ("wait", "error_payload")


class ClaudeBatchBaseTrigger(BaseTrigger):
    """Serialize the declared fields, share the connection's client, wait, and fire one event.

    A subclass sets `classpath` (where the triggerer finds it: it is stored with every deferred
    task, so it never changes) and `fields` (exactly the parameters of its `__init__`, each one
    assigned to `self`), and implements `wait` and `error_payload`.
    """

    classpath: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    conn_id: str

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract:
            check_declaration(cls)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and the declared fields: IDs, the conn id and settings, never a key."""
        return self.classpath, {name: getattr(self, name) for name in self.fields}

    def polled_batch_ids(self) -> Sequence[str]:
        """The batches this trigger polls through the shared poller (none for a trigger that only lists)."""
        return ()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait with the connection's shared client, then fire the one event (the client closes with its last user)."""
        async with shared_poller(self.conn_id, self.polled_batch_ids()) as poller:
            try:
                client = await poller.client()
            except Exception as exc:  # a broken connection definition must end the wait with a reason
                message = mask_secrets(f"Cannot build a client from connection {self.conn_id!r}: {exc}")
                payload = self.error_payload("refused", message)
            else:
                payload = await self.wait(poller, client)
        yield TriggerEvent(payload)

    @abstractmethod
    async def wait(self, poller: SharedPoller, client: AsyncAnthropic) -> Mapping[str, object]:
        """Wait until this trigger's condition holds or it must give up; the event's payload."""

    @abstractmethod
    def error_payload(self, kind: ErrorKind, message: str) -> Mapping[str, object]:
        """The event's payload for a wait that ended on an error of `kind`."""


def check_declaration(cls: type[ClaudeBatchBaseTrigger]) -> None:
    """Raise `TypeError` unless `cls` can be stored and rebuilt as `cls(**kwargs)` from its classpath."""
    name = cls.__qualname__
    expected = f"{cls.__module__}.{name}"
    classpath = cls.__dict__.get("classpath")
    if classpath != expected:
        raise TypeError(
            f"{name} must declare classpath = {expected!r} (got {classpath!r}): the triggerer imports the "
            "class from the stored classpath, so a moved class needs its old path kept importable."
        )
    fields = cls.__dict__.get("fields")
    if not isinstance(fields, tuple) or not fields or len(set(fields)) != len(fields) or "conn_id" not in fields:
        raise TypeError(f"{name}.fields must be a tuple of distinct parameter names including 'conn_id'")
    missing = [m for m in _ABSTRACT if getattr(getattr(cls, m), "__isabstractmethod__", False)]
    if missing:
        raise TypeError(f"{name} must implement {', '.join(missing)}")
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        raise TypeError(f"{name}.__init__ must name its parameters: *args/**kwargs cannot be serialized")
    taken = {p.name for p in parameters}
    if taken != set(fields):
        raise TypeError(
            f"{name}.fields and the parameters of __init__ differ: not taken {sorted(set(fields) - taken)}, "
            f"not serialized {sorted(taken - set(fields))} (a trigger is rebuilt as {name}(**fields))"
        )
    assigned = {i.argval for i in dis.get_instructions(cls.__init__) if i.opname == "STORE_ATTR"}
    unset = [f for f in fields if f not in assigned]
    if unset:
        raise TypeError(f"{name}.__init__ must assign self.{', self.'.join(unset)} (serialize reads them)")
