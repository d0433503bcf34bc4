"""Connection fields to SDK settings, for both accepted connection types."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_claude_batch.hooks.client_settings import ClientSettings, Secret


@dataclass
class FakeConnection:
    conn_id: str = "c"
    conn_type: str | None = "claude_batch"
    host: str | None = None
    port: int | None = None
    password: str | None = "sk-ant-secret"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra


def test_defaults_leave_the_base_url_to_the_sdk() -> None:
    settings = ClientSettings.from_connection(FakeConnection())
    assert settings.base_url is None
    assert settings.timeout == 120 and settings.max_retries == 2
    assert settings.default_headers == {}
    assert settings.api_key is not None and settings.api_key.reveal() == "sk-ant-secret"


def test_every_form_field_is_read() -> None:
    conn = FakeConnection(
        host="https://gateway.example.com/anthropic",
        extra={
            "workspace_id": "wrkspc_1",
            "timeout": "30",
            "max_retries": 5,
            "beta_headers": "output-300k-2026-03-24, other-beta",
            "proxy": "http://proxy:3128",
            "api_version": "2023-06-01",
        },
    )
    settings = ClientSettings.from_connection(conn)
    assert settings.base_url == "https://gateway.example.com/anthropic"
    assert settings.timeout == 30.0 and settings.max_retries == 5
    assert settings.proxy == "http://proxy:3128"
    assert settings.default_headers == {
        "anthropic-workspace-id": "wrkspc_1",
        "anthropic-beta": "output-300k-2026-03-24,other-beta",
        "anthropic-version": "2023-06-01",
    }


def test_ui_prefixed_extras_are_read_too() -> None:
    conn = FakeConnection(extra={"extra__claude_batch__workspace_id": "wrkspc_2"})
    assert ClientSettings.from_connection(conn).workspace_id == "wrkspc_2"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 8765, "http://127.0.0.1:8765"),
        ("localhost:9000", None, "http://localhost:9000"),
        ("api.anthropic.com", None, "https://api.anthropic.com"),
        ("http://127.0.0.1", 8765, "http://127.0.0.1:8765"),
        ("http://127.0.0.1:1234/", 8765, "http://127.0.0.1:1234"),
    ],
)
def test_a_bare_host_gets_a_scheme(host: str, port: int | None, expected: str) -> None:
    assert ClientSettings.from_connection(FakeConnection(host=host, port=port)).base_url == expected


def test_an_existing_anthropic_connection_works() -> None:
    conn = FakeConnection(
        conn_type="anthropic",
        host="https://proxy.example",
        extra={"anthropic_client_kwargs": {"timeout": 45, "max_retries": 7, "default_headers": {"x-team": "etl"}}},
    )
    settings = ClientSettings.from_connection(conn)
    assert settings.base_url == "https://proxy.example"
    assert settings.timeout == 45 and settings.max_retries == 7
    assert settings.default_headers == {"x-team": "etl"}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "many"}, "max_retries"),
        ({"anthropic_client_kwargs": "nope"}, "anthropic_client_kwargs"),
    ],
)
def test_bad_fields_name_the_connection_and_the_field(extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        ClientSettings.from_connection(FakeConnection(conn_id="my_conn", extra=extra))
    assert "my_conn" in str(caught.value)


def test_the_key_never_shows_in_reprs_or_pickles() -> None:
    settings = ClientSettings.from_connection(FakeConnection())
    assert "sk-ant-secret" not in repr(settings)
    assert "sk-ant-secret" not in str(settings.api_key)
    with pytest.raises(TypeError):
        pickle.dumps(Secret("sk-ant-secret"))
