"""Embedders for the semantic cache: the local model, or any `/v1/embeddings` provider.

The vector-index namespace includes the embedder's name and the vector's dimension, so
changing either gives clean misses, never a wrong hit.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Protocol

import orjson

from watchllm.embeddings import LOCAL_MODEL
from watchllm.errors import UpstreamError
from watchllm.proxy.base import UpstreamCall

if TYPE_CHECKING:
    from watchllm.embeddings.local import LocalEmbedder
    from watchllm.proxy.router import ProviderRouter

LOCAL_PREFIX = "local/"


class Embedder(Protocol):
    name: str

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class LocalEmbedding:
    """all-MiniLM-L6-v2 in-process (no paid API); CPU work runs off the event loop.
    numpy and the model load on the first embedding (in that thread): a gateway whose
    semantic cache is never used does not carry them (~25 MB and BLAS threads)."""

    def __init__(self) -> None:
        self.name = f"{LOCAL_PREFIX}{LOCAL_MODEL}"
        self._model: LocalEmbedder | None = None
        self._lock = threading.Lock()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._model is None:
                from watchllm.embeddings.local import LocalEmbedder

                self._model = LocalEmbedder()
        return self._model.embed(texts)


class ProviderEmbedding:
    """Embeddings through the provider seam (OpenAI, vLLM, Ollama, the mock...)."""

    def __init__(self, router: ProviderRouter, model: str) -> None:
        self.router = router
        self.name = model

    async def embed(self, texts: list[str]) -> list[list[float]]:
        data = {"model": self.name, "input": texts}
        call = UpstreamCall("embeddings", orjson.dumps(data), data, self.name, False)
        result, _ = await self.router.send(call)
        if result.status != 200 or result.body is None:
            raise UpstreamError(f"embedding model {self.name!r} failed with {result.status}",
                                upstream_status=result.status)
        doc = orjson.loads(result.body)
        return [item["embedding"] for item in sorted(doc["data"], key=lambda d: d["index"])]


def make_embedder(model: str, router: ProviderRouter) -> Embedder:
    if model.startswith(LOCAL_PREFIX):
        return LocalEmbedding()
    return ProviderEmbedding(router, model)
