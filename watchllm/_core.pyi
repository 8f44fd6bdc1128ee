"""Stubs for the Rust extension `watchllm._core` (rust_core/src/py.rs)."""

from collections.abc import Iterable, Sequence
from typing import Any, final

__all__ = [
    "CoreError",
    "RatePlan",
    "RowBinaryError",
    "VectorIndex",
    "__version__",
    "adjust_rates",
    "admit_rates",
    "cache_key",
    "context_key",
    "count_chat_tokens",
    "count_tokens",
    "embed_text",
    "encode_rowbinary",
    "encoding_for_model",
    "stream_usage",
]

__version__: str

class CoreError(ValueError): ...

class RowBinaryError(CoreError):
    row: int
    column: str

def cache_key(body: bytes, namespace: str) -> str: ...
def context_key(body: bytes, namespace: str) -> str: ...
def embed_text(body: bytes) -> str | None: ...
def count_tokens(text: str, encoding: str) -> int: ...
def encoding_for_model(model: str) -> str: ...
def count_chat_tokens(body: bytes | dict[str, Any]) -> int: ...
def stream_usage(raw: bytes) -> tuple[tuple[int, int, int] | None, str]: ...
def encode_rowbinary(
    columns: Sequence[tuple[str, str]], rows: Iterable[dict[str, Any]]
) -> bytes: ...

@final
class VectorIndex:
    def __new__(cls, dim: int) -> VectorIndex: ...
    @property
    def dim(self) -> int: ...
    def add(self, namespace: str, id: str, vector: Sequence[float] | Any) -> None: ...
    def remove(self, namespace: str, id: str) -> bool: ...
    def search(
        self, namespace: str, query: Sequence[float] | Any, k: int, threshold: float
    ) -> list[tuple[str, float]]: ...
    def namespace_len(self, namespace: str) -> int: ...
    def __len__(self) -> int: ...

@final
class RatePlan:
    def __new__(
        cls,
        rows: Sequence[tuple[str, int, int, bool]],
        groups: Sequence[tuple[tuple[bytes, bytes, bytes], Sequence[int]]],
    ) -> RatePlan: ...

def admit_rates(
    rates: dict[str, tuple[int, int, int]], plan: RatePlan, tokens: int, now_ms: int
) -> list[tuple[bytes, bytes]] | None: ...
def adjust_rates(
    rates: dict[str, tuple[int, int, int]], plan: RatePlan, delta: int, now_ms: int
) -> None: ...
