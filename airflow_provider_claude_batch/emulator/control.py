"""A small client for the emulator's `/_emulator/*` routes (stdlib only, so any test can use it)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Mapping


class EmulatorControl:
    """Move the clock, choose outcomes, inject faults and read counters of a running emulator.

    `credential` is the emulator's control token or its API key: the control routes refuse callers
    without one (`EmulatorServer.control` passes its token).
    """

    def __init__(self, base_url: str, credential: str) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"the emulator's URL must be http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._credential = credential

    def __repr__(self) -> str:
        return f"EmulatorControl({self.base_url!r})"

    def _call(self, method: str, route: str, payload: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        # The scheme was checked in __init__ (http or https only), and the URL is the emulator's own.
        request = urllib.request.Request(  # noqa: S310
            f"{self.base_url}/_emulator/{route}",
            data=data,
            method=method,
            headers={"content-type": "application/json", "x-api-key": self._credential},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (scheme checked in __init__)
            return json.loads(response.read())

    def state(self, *, custom_ids: bool = True) -> dict[str, Any]:
        """Counters and every batch made so far (with their custom_ids), for "no duplicate" proofs."""
        return cast("dict[str, Any]", self._call("GET", f"state?custom_ids={str(custom_ids).lower()}"))

    def advance(self, seconds: float) -> float:
        """Move the emulator's clock forward (expiry, archiving) and return its new epoch."""
        return float(self._call("POST", "clock", {"advance_seconds": seconds})["epoch"])

    def now(self) -> float:
        """The emulator's current epoch, which tests compare deadlines against."""
        return float(self._call("POST", "clock", {})["epoch"])

    def add_models(self, *models: Mapping[str, Any], replace: bool = False) -> list[str]:
        """Add (or, with `replace`, set) catalogue entries: `{"id": ..., "lifecycle": ..., "max_tokens": ...,
        "max_input_tokens": ..., "structured_outputs": ..., "aliases": [...]}`; returns every model ID.
        """
        answer = self._call("POST", "models", {"models": list(models), "replace": replace})
        return cast("list[str]", answer["models"])

    def create_batches(self, count: int, requests: list[Mapping[str, Any]]) -> list[str]:
        """`count` batches, each made from these `requests` as a create makes it; their IDs, oldest first.

        One call instead of `count` creates: the setup of a load test (10,000 waiting batches).
        """
        return cast("list[str]", self._call("POST", "batches", {"count": count, "requests": requests})["ids"])

    def configure(self, **settings: Any) -> dict[str, Any]:
        """EmulatorConfig's fields: processing_seconds, cancel_seconds, api_key, workspace_id, ...,
        cache_hit_probability.
        """
        return cast("dict[str, Any]", self._call("POST", "config", settings))

    def set_outcomes(self, *rules: Mapping[str, Any], replace: bool = True) -> None:
        """Rules like {"match": "bad-.*", "outcome": "errored", "error_type": "overloaded_error", "times": 2}."""
        self._call("POST", "outcomes", {"rules": list(rules), "replace": replace})

    def inject(self, *faults: Mapping[str, Any]) -> None:
        """Faults like {"endpoint": "retrieve", "status": 529, "count": 3} or
        {"endpoint": "create", "kind": "lost_response"}; see `emulator.faults.Fault`.
        """
        self._call("POST", "faults", {"faults": list(faults)})

    def clear_faults(self) -> None:
        """Drop every fault still waiting to be served."""
        self._call("DELETE", "faults")

    def reset(self) -> None:
        """Forget every batch, rule, fault and counter (the clock keeps its offset)."""
        self._call("POST", "reset", {})
