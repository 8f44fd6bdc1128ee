"""VectorIndex on Cloudflare Vectorize (the semantic cache).

Vectorize's limits, enforced here with clear errors before any request: dimensions
<= 1536, at most 1000 vectors per upsert (`add_many` cuts larger batches), metadata
<= 10 KiB per vector, ids <= 64 bytes, namespace names <= 64 bytes, topK <= 100.

Ids are global in a Vectorize index, while our ids are unique only per namespace, so the
stored id is `<16 hex of hash(namespace)>:<id>` and the namespace is also set as the
vector's Vectorize namespace (queries filter on it). The index must use the cosine
metric (`wrangler vectorize create ... --metric=cosine`): scores are then the cosine
similarity, the same scale as the in-process index. Vectorize applies upserts
asynchronously (a few seconds), so a just-cached answer becomes a semantic hit shortly
after, not at once; exact hits come from KV and are unaffected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from watchllm.env.cloudflare._js import js_value, to_py, unwrap

MAX_DIMENSIONS = 1536
MAX_UPSERT = 1000
MAX_METADATA_BYTES = 10 * 1024
MAX_ID_BYTES = 64
MAX_NAMESPACE_BYTES = 64
MAX_TOP_K = 100


class VectorizeLimitError(ValueError):
    """A request Vectorize would refuse (dimensions, batch, metadata or id size)."""


def _ns(namespace: str) -> str:
    # Namespace names are limited to 64 bytes: long ones are replaced by their hash.
    return namespace if len(namespace.encode()) <= MAX_NAMESPACE_BYTES else _tag(namespace) * 4


def _tag(namespace: str) -> str:
    return hashlib.blake2b(namespace.encode(), digest_size=8).hexdigest()


def vector_id(namespace: str, id: str) -> str:
    stored = f"{_tag(namespace)}:{id}"
    if len(stored.encode()) > MAX_ID_BYTES:
        raise VectorizeLimitError(f"vector id {id!r} is too long for Vectorize (64 bytes "
                                  "including the 17-byte namespace tag)")
    return stored


def _check_vector(vector: Sequence[float]) -> list[float]:
    if not 0 < len(vector) <= MAX_DIMENSIONS:
        raise VectorizeLimitError(
            f"Vectorize supports 1..{MAX_DIMENSIONS} dimensions, got {len(vector)}")
    return [float(x) for x in vector]


class VectorizeIndex:
    def __init__(self, binding: Any) -> None:
        self._index = unwrap(binding)

    async def add(self, namespace: str, id: str, vector: Sequence[float]) -> None:
        await self.add_many(namespace, [(id, vector, None)])

    async def add_many(self, namespace: str,
                       items: Sequence[tuple[str, Sequence[float], dict[str, Any] | None]]
                       ) -> None:
        records = []
        for id, vector, metadata in items:
            record: dict[str, Any] = {"id": vector_id(namespace, id),
                                      "values": _check_vector(vector),
                                      "namespace": _ns(namespace)}
            if metadata:
                size = len(json.dumps(metadata, separators=(",", ":")).encode())
                if size > MAX_METADATA_BYTES:
                    raise VectorizeLimitError(
                        f"Vectorize metadata is limited to 10 KiB per vector; got {size} bytes")
                record["metadata"] = metadata
            records.append(record)
        for start in range(0, len(records), MAX_UPSERT):
            await self._index.upsert(js_value(records[start:start + MAX_UPSERT]))

    async def remove(self, namespace: str, id: str) -> bool:
        stored = vector_id(namespace, id)
        found = to_py(await self._index.getByIds(js_value([stored]))) or []
        if not found:
            return False
        await self._index.deleteByIds(js_value([stored]))
        return True

    async def search(self, namespace: str, vector: Sequence[float], k: int,
                     threshold: float) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        options = {"topK": min(k, MAX_TOP_K), "namespace": _ns(namespace),
                   "returnValues": False, "returnMetadata": "none"}
        result = to_py(await self._index.query(js_value(_check_vector(vector)),
                                               js_value(options)))
        prefix = _tag(namespace) + ":"
        out = []
        for match in result.get("matches") or []:
            mid, score = str(match["id"]), float(match["score"])
            if score >= threshold and mid.startswith(prefix):
                out.append((mid[len(prefix):], score))
        out.sort(key=lambda m: -m[1])
        return out

    async def close(self) -> None:
        return None
