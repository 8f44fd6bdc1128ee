"""Pure-Python twins of `watchllm._core`: same functions, same results.

Used when the Rust extension is not available (Cloudflare Python Workers/Pyodide)
or when `WATCHLLM_CORE=python`. Each module mirrors one Rust module:
`_cache_key` ↔ `cache_key.rs`, `_tokens` ↔ `tokens.rs`, `_vector` ↔
`similarity.rs`, `_rowbinary` ↔ `rowbinary.rs`, `_stream` ↔ `stream.rs`, `_rates` ↔
`py/rates.rs`, `_tally` ↔ `py/tally.rs`; `crc32` is zlib's own (the Rust one computes
the same checksum faster).
"""

from __future__ import annotations

from zlib import crc32

from ._cache_key import cache_key, context_key, embed_text
from ._errors import CoreError, RowBinaryError
from ._rates import HeldRates, HeldSlot, RateGrant, RatePlan, RateTable
from ._rowbinary import encode_rowbinary
from ._stream import stream_usage
from ._tally import RequestTally
from ._tokens import count_chat_tokens, count_tokens, encoding_for_model
from ._vector import VectorIndex

__version__ = "0.1.0"

__all__ = [
    "CoreError",
    "HeldRates",
    "HeldSlot",
    "RateGrant",
    "RatePlan",
    "RateTable",
    "RequestTally",
    "RowBinaryError",
    "VectorIndex",
    "__version__",
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
