"""Pure checks behind the documented errors: masking secret-shaped text, comparing origins, naming a
failing proxy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_claude_batch.exceptions import BatchApiRefusedError, ClaudeBatchError
from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, mask_secrets, same_origin, show_origin
from airflow_provider_claude_batch.hooks.client_settings import ClientSettings, check_proxy_support

KEY = "sk-ant-api03-" + "Ab3_xY9-" * 12
TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZyyXXww"


@pytest.mark.parametrize(
    "text",
    [
        f"workspace {KEY}",
        f"Cannot reach https://gateway.example/{KEY}/v1",
        f"proxy http://user:{TOKEN}@proxy.example:3128",
        f"beta headers ('{TOKEN}',)",
        f"bearer {TOKEN}.{TOKEN}",
    ],
)
def test_secret_shaped_values_are_masked(text: str) -> None:
    masked = mask_secrets(text)
    assert KEY not in masked and TOKEN not in masked
    assert "sk-ant-api03" not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "text",
    [
        "Batch msgbatch_01HkcTjaV5uDC8jWR4ZsDV8dAAAAAAAA is in_progress",
        "401 authentication_error request req_011CSHoEeqs5C35K2UUqR7FyQQQQQQQQ",
        "request req_emu_0123456789abcdef01234567",
        "workspace wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ9999",
        "Claude Batches API at https://api.anthropic.com (connection 'claude_batch_default')",
        "7 of 12 requests are invalid; nothing was submitted",
        "a_word_that_is_long_but_has_no_digits_at_all_really",
    ],
)
def test_ids_and_ordinary_text_stay_readable(text: str) -> None:
    assert mask_secrets(text) == text


def test_every_error_we_raise_is_masked() -> None:
    error = BatchApiRefusedError(f"workspace {KEY!r} was refused", ["msgbatch_x"])
    assert KEY not in str(error) and "msgbatch_x" in str(error)
    assert KEY not in str(ClaudeBatchError(f"url http://{TOKEN}@host"))


def test_connection_field_errors_do_not_repeat_a_pasted_key() -> None:
    conn = SimpleNamespace(
        conn_id="c", conn_type="claude_batch", host=None, port=None, password="k", extra_dejson={"timeout": KEY}
    )
    with pytest.raises(ValueError, match="timeout must be a number") as caught:
        ClientSettings.from_connection(conn)  # type: ignore[arg-type]
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "base", "same"),
    [
        ("https://api.anthropic.com/v1/messages/batches/b/results", "https://api.anthropic.com", True),
        ("https://API.anthropic.com:443/v1/x", "https://api.anthropic.com/", True),
        ("http://127.0.0.1:8765/v1/x", "http://127.0.0.1:8765", True),
        ("/v1/messages/batches/b/results", "https://api.anthropic.com", True),
        ("http://api.anthropic.com/v1/x", "https://api.anthropic.com", False),  # scheme
        ("https://api.anthropic.com:8443/v1/x", "https://api.anthropic.com", False),  # port
        ("https://files.example.com/v1/x", "https://api.anthropic.com", False),  # host
        ("https://api.anthropic.com@evil.example/v1/x", "https://api.anthropic.com", False),
        ("//evil.example/v1/x", "https://api.anthropic.com", False),
        ("http://127.0.0.1:9999/v1/x", "http://127.0.0.1:8765", False),
    ],
)
def test_origins_are_scheme_host_and_port(url: str, base: str, same: bool) -> None:
    assert same_origin(url, base) is same


def test_an_origin_is_shown_without_credentials_or_path() -> None:
    assert show_origin(f"http://user:{TOKEN}@proxy.example:3128/x?y") == "http://proxy.example:3128"


def _error(status: int | None, kind: str = "APIConnectionError") -> SimpleNamespace:
    return SimpleNamespace(status_code=status, request_id=None, type=kind)


def test_a_failing_proxy_is_named_by_host_never_by_its_credentials() -> None:
    proxy = f"http://me:{TOKEN}@proxy.internal:3128"
    refused = describe_api_error(_error(407, "proxy_error"), proxy)  # type: ignore[arg-type]
    unreachable = describe_api_error(_error(None), proxy)  # type: ignore[arg-type]
    for text in (refused, unreachable):
        assert "proxy http://proxy.internal:3128" in text and TOKEN not in text and "me:" not in text
    assert "refused the credentials" in refused
    assert "proxy" not in describe_api_error(_error(None))  # type: ignore[arg-type]
    assert "proxy" not in describe_api_error(_error(500, "api_error"), proxy)  # type: ignore[arg-type]


def test_a_socks_proxy_without_socksio_gets_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "socksio" else real_find_spec(name, *a)
    )
    with pytest.raises(
        ValueError, match=r"socks5://proxy.internal:1080 is a SOCKS proxy, which needs the socksio"
    ) as caught:
        check_proxy_support(f"socks5://me:{TOKEN}@proxy.internal:1080")
    assert TOKEN not in str(caught.value)
    check_proxy_support("http://proxy.internal:3128")
    check_proxy_support(None)
