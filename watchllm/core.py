"""The core API: `watchllm._core` (Rust) when importable, else `watchllm._twins`.

Set `WATCHLLM_CORE=python` to force the pure-Python twins. `BACKEND` says which
one is in use. Both backends have the same functions and results (checked by
tests/core); errors are `CoreError(ValueError)` and its subclass `RowBinaryError`
(attributes `.row`, `.column`) of the active backend. Types come from the
extension's stubs (`_core.pyi`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Literal


def _load() -> ModuleType:
    if os.environ.get("WATCHLLM_CORE", "").strip().lower() != "python":
        try:
            return importlib.import_module("watchllm._core")
        except ImportError:
            pass
    return importlib.import_module("watchllm._twins")


_impl = _load()
BACKEND: Literal["rust", "python"] = "rust" if _impl.__name__ == "watchllm._core" else "python"

if TYPE_CHECKING:
    from ._core import (
        CoreError,
        HeldRates,
        HeldSlot,
        RateGrant,
        RatePlan,
        RateTable,
        RequestTally,
        RowBinaryError,
        VectorIndex,
        cache_key,
        context_key,
        count_chat_tokens,
        count_tokens,
        crc32,
        embed_text,
        encode_rowbinary,
        encoding_for_model,
        stream_usage,
    )
else:
    CoreError = _impl.CoreError
    HeldRates = _impl.HeldRates
    HeldSlot = _impl.HeldSlot
    RateGrant = _impl.RateGrant
    RatePlan = _impl.RatePlan
    RateTable = _impl.RateTable
    RequestTally = _impl.RequestTally
    RowBinaryError = _impl.RowBinaryError
    VectorIndex = _impl.VectorIndex
    cache_key = _impl.cache_key
    context_key = _impl.context_key
    count_chat_tokens = _impl.count_chat_tokens
    count_tokens = _impl.count_tokens
    crc32 = _impl.crc32
    embed_text = _impl.embed_text
    encode_rowbinary = _impl.encode_rowbinary
    encoding_for_model = _impl.encoding_for_model
    stream_usage = _impl.stream_usage

__all__ = [
    "BACKEND",
    "CoreError",
    "HeldRates",
    "HeldSlot",
    "RateGrant",
    "RatePlan",
    "RateTable",
    "RequestTally",
    "RowBinaryError",
    "VectorIndex",
    "cache_key",
    "context_key",
    "count_chat_tokens",
    "count_tokens",
    "crc32",
    "embed_text",
    "encode_rowbinary",
    "encoding_for_model",
    "stream_usage",
]
