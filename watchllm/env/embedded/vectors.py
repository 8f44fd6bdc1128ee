"""VectorIndex on `watchllm.core.VectorIndex` (Rust, in-process; the twin under Pyodide).

One core index per dimension; namespaces partition it. Large searches run in a thread
(the Rust search releases the GIL), small ones inline: a thread hop costs more than
scanning a few thousand vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from watchllm import core

_INLINE_MAX = 20_000  # vectors in a namespace searched without leaving the event loop


class CoreVectorIndex:
    def __init__(self) -> None:
        self._by_dim: dict[int, core.VectorIndex] = {}

    def _index(self, dim: int) -> core.VectorIndex:
        index = self._by_dim.get(dim)
        if index is None:
            index = self._by_dim[dim] = core.VectorIndex(dim)
        return index

    async def add(self, namespace: str, id: str, vector: Sequence[float]) -> None:
        self._index(len(vector)).add(namespace, id, list(vector))

    async def remove(self, namespace: str, id: str) -> bool:
        return any(index.remove(namespace, id) for index in self._by_dim.values())

    async def search(self, namespace: str, vector: Sequence[float], k: int,
                     threshold: float) -> list[tuple[str, float]]:
        index = self._index(len(vector))
        query = list(vector)
        if index.namespace_len(namespace) <= _INLINE_MAX:
            return list(index.search(namespace, query, k, threshold))
        return list(await asyncio.to_thread(index.search, namespace, query, k, threshold))

    async def close(self) -> None:
        self._by_dim.clear()
