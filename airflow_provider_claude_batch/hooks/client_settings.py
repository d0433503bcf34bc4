"""Turn an Airflow connection into SDK client settings: pure, so every field rule is unit-tested.

Two connection shapes are accepted: our `claude_batch` type (fields declared in
`get_provider_info`), and an existing `anthropic` connection (key in password, base URL in host,
optional `anthropic_client_kwargs` in extra).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

CONN_TYPE = "claude_batch"
DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_RETRIES = 2


class ConnectionLike(Protocol):
    """The parts of `airflow.sdk.Connection` we read."""

    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The connection's extra field, parsed from JSON."""
        ...


class Secret:
    """Holds a credential so that no repr, str or log line can show it by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The credential itself, for the one call that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is never serialized; pass the conn_id instead")


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to build an SDK client, with the key wrapped in `Secret`."""

    api_key: Secret | None
    base_url: str | None = None
    workspace_id: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    beta_headers: tuple[str, ...] = ()
    proxy: str | None = None
    api_version: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_headers(self) -> dict[str, str]:
        """The headers every request sends: workspace, beta features, API version and the connection's own."""
        headers = dict(self.extra_headers)
        if self.workspace_id:
            headers["anthropic-workspace-id"] = self.workspace_id
        if self.beta_headers:
            headers["anthropic-beta"] = ",".join(self.beta_headers)
        if self.api_version:
            headers["anthropic-version"] = self.api_version
        return headers

    @classmethod
    def from_connection(cls, conn: ConnectionLike) -> ClientSettings:
        """The settings an Airflow connection describes; a malformed extra raises with the field to fix."""
        extra = conn.extra_dejson or {}
        client_kwargs = extra.get("anthropic_client_kwargs") or {}
        if not isinstance(client_kwargs, Mapping):
            raise ValueError(f"Connection {conn.conn_id!r}: extra 'anthropic_client_kwargs' must be an object")

        def pick(name: str) -> Any:
            for key in (name, f"extra__{CONN_TYPE}__{name}"):
                value = extra.get(key)
                if value not in (None, ""):
                    return value
            return client_kwargs.get(name)

        headers = client_kwargs.get("default_headers") or {}
        return cls(
            api_key=Secret(conn.password) if conn.password else None,
            base_url=_base_url(conn.host, conn.port) or client_kwargs.get("base_url"),
            workspace_id=_optional_str(pick("workspace_id")),
            timeout=_positive_float(pick("timeout"), DEFAULT_TIMEOUT_SECONDS, conn.conn_id, "timeout"),
            max_retries=_retries(pick("max_retries"), conn.conn_id),
            beta_headers=_beta_headers(pick("beta_headers")),
            proxy=_optional_str(pick("proxy")),
            api_version=_optional_str(pick("api_version")),
            extra_headers={str(k): str(v) for k, v in dict(headers).items()},
        )


def check_proxy_support(proxy: str | None) -> None:
    """A SOCKS proxy needs `socksio` (the `socks` extra); without it the HTTP library fails with an
    ImportError deep inside the client build. Say so plainly, before any call.
    """
    if not proxy or not proxy.lower().startswith("socks"):
        return
    import importlib.util

    if importlib.util.find_spec("socksio") is None:
        from airflow_provider_claude_batch.hooks.api_errors import show_origin

        raise ValueError(
            f"The connection's proxy {show_origin(proxy)} is a SOCKS proxy, which needs the "
            "socksio package: pip install 'airflow-provider-claude-batch[socks]' "
            "(or 'httpx2[socks]')."
        )


def _shown(value: Any) -> str:
    """A field's value for an error message, masked: it may be a key pasted into the wrong field."""
    from airflow_provider_claude_batch.hooks.api_errors import mask_secrets

    return mask_secrets(repr(value))


def _optional_str(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _positive_float(value: Any, default: float, conn_id: str, name: str) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Connection {conn_id!r}: {name} must be a number of seconds, not {_shown(value)}") from None
    if number <= 0:
        raise ValueError(f"Connection {conn_id!r}: {name} must be positive, not {_shown(value)}")
    return number


def _retries(value: Any, conn_id: str) -> int:
    if value is None:
        return DEFAULT_MAX_RETRIES
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"Connection {conn_id!r}: max_retries must be a whole number, not {_shown(value)}") from None
    if number < 0:
        raise ValueError(f"Connection {conn_id!r}: max_retries cannot be negative")
    return number


def _beta_headers(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(p.strip() for p in parts if p.strip())


def _base_url(host: str | None, port: int | None) -> str | None:
    """A host with a scheme is used as given; a bare host gets https, or http on loopback."""
    if not host:
        return None
    host = host.strip().rstrip("/")
    if "://" in host:
        return host if port is None or _has_port(host) else f"{host}:{port}"
    name = host.split(":")[0]
    scheme = "http" if _is_loopback(name) else "https"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and ":" not in host else "")


def _has_port(url: str) -> bool:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    return ":" in netloc.rsplit("]", 1)[-1]


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
