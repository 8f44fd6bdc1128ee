"""Twin of `rust_core/src/similarity.rs`: cosine top-k in pure Python (no numpy).

Same arithmetic as the Rust side, bit for bit: the norm is summed sequentially in
float64, components are rounded to float32 after normalising (`array("f")`), and a
score is the float32 dot product in the order `similarity.rs::dot` documents
(16 lanes, component i in lane i % 16, products and sums each rounded to float32,
lanes summed as a fixed tree). Python has no float32 arithmetic, so each operation
is done in float64 and rounded to float32 by storing into `array("f")`: for + and *
of two float32 values that double rounding equals a single float32 rounding
(float64 carries more than 2 * 24 + 2 bits), so the scores are the same bits.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Sequence
from operator import add, mul
from typing import Any

from ._errors import CoreError

LANES = 16
BATCH = 1024


def _f32_scores(rows: list[array[float]], q: array[float]) -> list[float]:
    """The float32 dot product of each row with `q`, in the order of
    `similarity.rs::dot`. Vectorised across rows: each lane of every row advances
    in one `map`."""
    dim, n = len(q), len(rows)
    if not n:
        return []
    flat = array("f", b"".join(map(array.tobytes, rows)))
    products = array("f", map(mul, flat, q * n))  # rounded to float32
    lanes = [array("f", bytes(4 * n)) for _ in range(LANES)]
    for i in range(dim):
        j = i % LANES
        lanes[j] = array("f", map(add, lanes[j], products[i::dim]))
    width = LANES // 2
    while width:
        lanes = [array("f", map(add, lanes[j], lanes[j + width])) for j in range(width)]
        width //= 2
    return lanes[0].tolist()


def _floats(vector: Any) -> list[float]:
    try:
        mv = memoryview(vector)
    except TypeError:
        mv = None
    if mv is not None and mv.format in ("f", "d", "<f", "<d", "=f", "=d"):
        if mv.ndim != 1:
            raise CoreError("vector must be a 1-D sequence or buffer of floats")
        return mv.tolist()  # type: ignore[return-value]
    try:
        return [float(x) for x in vector]
    except (TypeError, ValueError):
        raise CoreError("vector must be a 1-D sequence or buffer of floats") from None


class VectorIndex:
    """namespace → (id → unit vector); `search` returns the best ids by cosine."""

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise CoreError("dimension must be positive")
        self._dim = dim
        self._spaces: dict[str, dict[str, array[float]]] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def _normalise(self, vector: Sequence[float] | Any) -> array[float]:
        v = _floats(vector)
        if len(v) != self._dim:
            raise CoreError(f"vector has {len(v)} dimensions, the index has {self._dim}")
        sq = 0.0
        for x in v:
            if not math.isfinite(x):
                raise CoreError("vector has a non-finite component")
            sq += x * x
        norm = math.sqrt(sq)
        if norm == 0.0:
            raise CoreError("zero vector has no direction")
        if not math.isfinite(norm):
            raise CoreError("vector norm overflows")
        return array("f", [x / norm for x in v])

    def add(self, namespace: str, id: str, vector: Sequence[float] | Any) -> None:
        self._spaces.setdefault(namespace, {})[id] = self._normalise(vector)

    def remove(self, namespace: str, id: str) -> bool:
        space = self._spaces.get(namespace)
        if space is None or id not in space:
            return False
        del space[id]
        if not space:
            del self._spaces[namespace]
        return True

    def search(
        self, namespace: str, query: Sequence[float] | Any, k: int, threshold: float
    ) -> list[tuple[str, float]]:
        q = self._normalise(query)
        space = self._spaces.get(namespace)
        if not space or k <= 0:
            return []
        hits: list[tuple[float, str]] = []
        ids = list(space)
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            scores = _f32_scores([space[id] for id in batch], q)
            hits.extend(
                (-score, id) for id, score in zip(batch, scores, strict=True) if score >= threshold
            )
        return [(id, -neg) for neg, id in heapq.nsmallest(k, hits)]

    def namespace_len(self, namespace: str) -> int:
        return len(self._spaces.get(namespace, ()))

    def __len__(self) -> int:
        return sum(map(len, self._spaces.values()))
