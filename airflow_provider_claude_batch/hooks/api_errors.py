"""Describe SDK errors for logs and messages without importing the SDK (duck-typed), and mask
anything secret-shaped in the text we build.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# What a misplaced credential looks like: an Anthropic key (`sk-ant-api03-...`, admin and OAuth keys
# too), the user-info of a URL (`//user:password@host`), or a long token (32+ characters mixing letters
# and digits). The API's own IDs (`msgbatch_...`, `req_...`, `wrkspc_...`, `msg_...`) stay readable:
# they are what an engineer needs to find a call, and they open nothing.
_ANTHROPIC_KEY = re.compile(r"sk-ant-[A-Za-z0-9_\-]*")
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")
_LONG_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_\-+=])(?=[A-Za-z0-9_\-+=]*[0-9])(?=[A-Za-z0-9_\-+=]*[A-Za-z])"
    r"[A-Za-z0-9_\-+=]{32,}"
)
_API_ID = re.compile(r"(msgbatch|req|wrkspc|msg)_[A-Za-z0-9_]+")
MASK = "***"


def mask_secrets(text: str) -> str:
    """`text` with every secret-shaped part replaced by `***` (a key pasted into the wrong field of a
    connection must not come back in an error message or a log line).
    """
    text = _ANTHROPIC_KEY.sub("sk-ant-" + MASK, text)
    text = _USERINFO.sub(MASK + "@", text)
    return _LONG_TOKEN.sub(lambda m: m.group(0) if _API_ID.fullmatch(m.group(0)) else MASK, text)


def secret_shaped_parts(text: str) -> list[str]:
    """The parts of `text` that `mask_secrets` hides (to register them with Airflow's log masker, so
    that the HTTP library's own log lines hide them too).
    """
    parts = _ANTHROPIC_KEY.findall(text) + [m[:-1] for m in _USERINFO.findall(text)]
    return parts + [m for m in _LONG_TOKEN.findall(text) if not _API_ID.fullmatch(m)]


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an absolute URL, the port made explicit for http and https."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, base_url: str) -> bool:
    """Whether `url` is served by the origin of `base_url`. A path without scheme and host is (the
    client joins it onto its base URL); `//host/...` is not.
    """
    parts = urlsplit(url.strip())
    if not parts.scheme and not parts.netloc:
        return True
    return origin(url) == origin(base_url)


def show_origin(url: str) -> str:
    """An origin as people write it, without user-info or path."""
    scheme, host, port = origin(url)
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def retry_after(exc: BaseException) -> float | None:
    """The server's retry-after header, in seconds, if it sent one."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def describe_api_error(exc: BaseException, proxy: str | None = None) -> str:
    """Status, error type and request id: enough to find the call in the API's logs, and never the key.

    With a proxy configured, a 407 or a connection that failed is the proxy's doing (every call goes
    to it first), and the text says so, naming its host, never its credentials.
    """
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    kind = getattr(exc, "type", None) or type(exc).__name__
    parts = [str(status) if status else "network", str(kind)]
    if request_id:
        parts.append(f"request {request_id}")
    if proxy and (status == 407 or status is None):
        refusal = "refused the credentials" if status == 407 else "could not be reached or refused the tunnel"
        parts.append(f"(proxy {show_origin(proxy)} {refusal})")
    return mask_secrets(" ".join(parts))
