"""Triggers are declarations on one base class: what they serialize, and the mistakes caught when a
trigger class is defined (at import), long before a triggerer tries to rebuild it from the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from airflow_provider_claude_batch.triggers.base import ClaudeBatchBaseTrigger
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger, ClaudeBatchTrigger
from tests.unit.triggers.conftest import KEY, FakeClient

HERE = __name__


def test_the_wait_trigger_serializes_exactly_its_settings_and_round_trips(fake_client: FakeClient) -> None:
    trigger = ClaudeBatchTrigger(("msgbatch_a", "msgbatch_b"), "conn", deadline=100, poll_interval=5, started_at=1)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchTrigger"
    assert kwargs == {
        "batch_ids": ["msgbatch_a", "msgbatch_b"],
        "conn_id": "conn",
        "deadline": 100.0,
        "poll_interval": 5.0,
        "max_poll_interval": 300.0,
        "error_budget": 3 * 3600.0,
        "cancel_on_kill": False,
        "started_at": 1.0,
    }
    assert ClaudeBatchTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert KEY not in repr(kwargs)


def test_the_queue_trigger_serializes_exactly_its_settings_and_round_trips(fake_client: FakeClient) -> None:
    classpath, kwargs = ClaudeBatchQueueTrigger(3, 10, poll_interval=2).serialize()
    assert classpath == "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchQueueTrigger"
    assert kwargs == {
        "needed": 3,
        "max_queued": 10,
        "conn_id": "claude_batch_default",
        "poll_interval": 2.0,
        "error_budget": 3 * 3600.0,
    }
    assert ClaudeBatchQueueTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert KEY not in repr(kwargs)


class _Body:
    """The methods every declaration below shares (only the declaration differs)."""

    async def wait(self, poller: Any, client: Any) -> Mapping[str, object]:
        return {"status": "done", "conn_id": getattr(self, "conn_id", None)}

    def error_payload(self, kind: str, message: str) -> Mapping[str, object]:
        return {"status": "error", "error_kind": kind, "message": message}


def test_a_correct_declaration_serializes_and_fires_one_event(fake_client: FakeClient) -> None:
    class Good(_Body, ClaudeBatchBaseTrigger):
        classpath = f"{HERE}.test_a_correct_declaration_serializes_and_fires_one_event.<locals>.Good"
        fields = ("conn_id", "size")

        def __init__(self, conn_id: str = "claude_batch_default", size: int = 1) -> None:
            super().__init__()
            self.conn_id = conn_id
            self.size = size

    assert Good(size=2).serialize() == (Good.classpath, {"conn_id": "claude_batch_default", "size": 2})

    async def events() -> list[Any]:
        return [event.payload async for event in Good().run()]

    import asyncio

    assert asyncio.run(events()) == [{"status": "done", "conn_id": "claude_batch_default"}]


def _declare(classpath: str | None = "auto", fields: tuple[str, ...] = ("conn_id", "size"), **body: Any) -> type:
    """Define a trigger class the way a module would; the base checks it as the class is created."""
    namespace: dict[str, Any] = {"__module__": HERE, "__qualname__": "Declared", **body}
    if classpath == "auto":
        namespace["classpath"] = f"{HERE}.Declared"
    elif classpath is not None:
        namespace["classpath"] = classpath
    namespace["fields"] = fields
    if "__init__" not in namespace:

        def __init__(self: Any, conn_id: str = "c", size: int = 1) -> None:
            ClaudeBatchBaseTrigger.__init__(self)
            self.conn_id = conn_id
            self.size = size

        namespace["__init__"] = __init__
    return type("Declared", (_Body, ClaudeBatchBaseTrigger), namespace)


def test_a_well_formed_declaration_passes_the_checks() -> None:
    assert _declare().fields == ("conn_id", "size")


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"classpath": None}, "must declare classpath"),
        ({"classpath": "somewhere.else.Declared"}, "must declare classpath"),
        ({"fields": ("conn_id",)}, "not serialized \\['size'\\]"),
        ({"fields": ("conn_id", "size", "colour")}, "not taken \\['colour'\\]"),
        ({"fields": ("size",)}, "including 'conn_id'"),
        ({"fields": ["conn_id", "size"]}, "must be a tuple"),
        ({"fields": ("conn_id", "size", "size")}, "distinct"),
    ],
)
def test_a_misdeclared_trigger_fails_when_its_class_is_defined(declaration: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _declare(**declaration)


def test_a_field_that_init_takes_but_does_not_set_fails_at_definition() -> None:
    def __init__(self: Any, conn_id: str = "c", size: int = 1) -> None:
        self.conn_id = conn_id  # size is taken, never stored: serialize() could not read it

    with pytest.raises(TypeError, match=r"must assign self\.size"):
        _declare(__init__=__init__)


def test_an_init_with_kwargs_fails_at_definition() -> None:
    def __init__(self: Any, conn_id: str = "c", **extra: Any) -> None:
        self.conn_id = conn_id

    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs"):
        _declare(fields=("conn_id",), __init__=__init__)


def test_a_trigger_without_wait_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="must implement wait"):
        _declare(wait=ClaudeBatchBaseTrigger.wait)


def test_a_subclass_of_a_trigger_must_declare_its_own_classpath() -> None:
    """Inheriting the parent's classpath would store the parent: the triggerer would rebuild the wrong class."""
    with pytest.raises(TypeError, match="must declare classpath"):

        class Louder(ClaudeBatchTrigger):
            pass


def test_an_abstract_intermediate_base_is_not_checked() -> None:
    class Shared(ClaudeBatchBaseTrigger, abstract=True):
        pass

    assert "classpath" not in Shared.__dict__
