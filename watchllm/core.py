"""The core API: `watchllm._core` (Rust) when importable, else `watchllm._twins`.

Set `WATCHLLM_CORE=python` to force the pure-Python twins. `BACKEND` says which
one is in use. Errors: `CoreError(ValueError)` and its subclass `RowBinaryError`
(attributes `.row`, `.column`) — the classes of the active backend.
"""

from __future__ import annotations

import os
from typing import Literal

BACKEND: Literal["rust", "python"]

if os.environ.get("WATCHLLM_CORE", "").lower() == "python":
    from ._twins import (
        CoreError,
        RowBinaryError,
        VectorIndex,
        cache_key,
        context_key,
        count_chat_tokens,
        count_tokens,
        embed_text,
        encode_rowbinary,
        encoding_for_model,
    )

    BACKEND = "python"
else:
    try:
        from ._core import (
            CoreError,
            RowBinaryError,
            VectorIndex,
            cache_key,
            context_key,
            count_chat_tokens,
            count_tokens,
            embed_text,
            encode_rowbinary,
            encoding_for_model,
        )

        BACKEND = "rust"
    except ImportError:
        from ._twins import (  # type: ignore[assignment]
            CoreError,
            RowBinaryError,
            VectorIndex,
            cache_key,
            context_key,
            count_chat_tokens,
            count_tokens,
            embed_text,
            encode_rowbinary,
            encoding_for_model,
        )

        BACKEND = "python"

__all__ = [
    "BACKEND",
    "CoreError",
    "RowBinaryError",
    "VectorIndex",
    "cache_key",
    "context_key",
    "count_chat_tokens",
    "count_tokens",
    "embed_text",
    "encode_rowbinary",
    "encoding_for_model",
]
