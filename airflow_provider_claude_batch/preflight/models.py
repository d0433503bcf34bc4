"""What the Models API says about one model, reduced to what preflight and structured output decide on.

Pure: bytes or a decoded object in, a `ModelInfo` out. The capability flags are read from the API's
`capabilities` object, whose keys are always present on the current API; an older answer without it
reads as "not supported", the safe side for every decision made from it.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Lifecycle = Literal["active", "deprecated", "retired"]


class _Support(msgspec.Struct):
    supported: bool = False


class _Capabilities(msgspec.Struct):
    batch: _Support = msgspec.field(default_factory=_Support)
    structured_outputs: _Support = msgspec.field(default_factory=_Support)


class _RawModelInfo(msgspec.Struct):
    id: str
    display_name: str = ""
    lifecycle: Lifecycle = "active"
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    capabilities: dict[str, Any] | None = None


class ModelInfo(msgspec.Struct, frozen=True):
    """One model as the Models API describes it (`GET /v1/models/{id}`).

    `id` is the resolved ID (an alias resolves to the model it names); `lifecycle` "retired" means
    inference requests naming it fail; `max_input_tokens` is the context window and `max_tokens`
    the largest accepted `max_tokens` (either may be unknown). `capabilities` keeps the raw object.
    """

    id: str
    display_name: str
    lifecycle: Lifecycle
    max_input_tokens: int | None
    max_tokens: int | None
    structured_outputs: bool
    batch: bool
    capabilities: dict[str, Any]


_decoder = msgspec.json.Decoder(_RawModelInfo)


def decode_model_info(raw: bytes | bytearray | dict[str, Any]) -> ModelInfo:
    """A `ModelInfo` from the Models API's JSON (bytes) or an already decoded object.

    Raises `ValueError` naming the field when the answer is not a model object.
    """
    try:
        info = msgspec.convert(raw, _RawModelInfo) if isinstance(raw, dict) else _decoder.decode(raw)
        capabilities = info.capabilities or {}
        flags = msgspec.convert(capabilities, _Capabilities)
    except msgspec.DecodeError as exc:  # ValidationError included; not a ValueError on msgspec 0.19
        raise ValueError(f"not a Models API model object: {exc}") from None
    return ModelInfo(
        id=info.id,
        display_name=info.display_name or info.id,
        lifecycle=info.lifecycle,
        max_input_tokens=info.max_input_tokens,
        max_tokens=info.max_tokens,
        structured_outputs=flags.structured_outputs.supported,
        batch=flags.batch.supported,
        capabilities=capabilities,
    )


__all__ = ["Lifecycle", "ModelInfo", "decode_model_info"]
