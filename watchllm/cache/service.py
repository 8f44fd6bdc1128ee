"""The response cache: exact and semantic lookups, single-flight, writes, purges.

Keys: ``wlc1:<project>:<namespace>:<hash>`` where <hash> is `core.cache_key` of the
request over (project, namespace, endpoint). The project is part of every key and of
every vector-index namespace, so one project can never read another's entries; the
format version leads the key, so an upgrade never even looks at an old entry.

Semantic candidates must share the context key (model, parameters, conversation before
the last user message) and the embedder's identity (model name and dimension), reach the
cosine threshold, and pass `verify` (numbers, negations, entities, direction...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchllm import core
from watchllm.cache.controls import CacheControls
from watchllm.cache.embedder import Embedder
from watchllm.cache.entry import FORMAT_VERSION, CacheEntry, age_s
from watchllm.cache.verify import verify
from watchllm.env.base import KeyValue, VectorIndex
from watchllm.settings import Settings

CACHEABLE = ("chat/completions", "completions", "embeddings")
SEMANTIC_CANDIDATES = 5
_POLL_S = 0.02
_DECODED_MAX_BYTES = 16 << 20  # decoded entries kept per worker (the bytes they came from)


@dataclass(slots=True)
class CachePlan:
    project_id: str
    endpoint: str
    key: str  # KV key of the exact entry
    prefix: str  # KV prefix of the (project, namespace)
    read: bool
    write: bool
    ttl_s: float | None
    semantic: bool
    threshold: float
    raw: bytes
    text: str | None = None  # last user message, for semantic lookups
    vector: list[float] | None = None
    vector_ns: str = ""
    leader: bool = False
    locked: bool = False


@dataclass(slots=True)
class CacheHit:
    entry: CacheEntry
    status: str  # HIT | SEMANTIC_HIT
    similarity: float | None = None
    stored: bytes | None = None  # the KV value the entry was decoded from (exact hits)

    @property
    def age_s(self) -> int:
        return age_s(self.entry.created)


class ResponseCache:
    def __init__(self, settings: Settings, kv: KeyValue, vectors: VectorIndex | None,
                 embedder: Embedder | None) -> None:
        self.settings = settings
        self.kv = kv
        # An in-process KV also answers without a coroutine (`get_now`; the hot path's).
        self._kv_get_now: Callable[[str], bytes | None] | None = getattr(kv, "get_now", None)
        self.vectors = vectors
        self.embedder = embedder
        self._flights: dict[str, asyncio.Future[CacheEntry | None]] = {}
        # KV key -> (stored bytes, decoded entry): a hot entry is decoded (and its replay
        # body rendered) once, not per hit. Checked by value, so any rewrite is decoded anew.
        self._decoded: dict[str, tuple[bytes, CacheEntry]] = {}
        self._decoded_bytes = 0

    def _decode(self, key: str, data: bytes) -> CacheEntry | None:
        memo = self._decoded.get(key)
        if memo is not None and memo[0] == data:
            return memo[1]
        entry = CacheEntry.decode(data)
        if entry is not None and len(data) <= _DECODED_MAX_BYTES // 64:
            if memo is not None:
                self._decoded_bytes -= len(self._decoded.pop(key)[0])
            while self._decoded and self._decoded_bytes + len(data) > _DECODED_MAX_BYTES:
                oldest = next(iter(self._decoded))  # insertion order: oldest first
                self._decoded_bytes -= len(self._decoded.pop(oldest)[0])
            self._decoded[key] = (data, entry)
            self._decoded_bytes += len(data)
        return entry

    def stored_now(self, key: str, stored: bytes) -> bool | None:
        """`still_stored` without a coroutine, where the KV can answer at once (in process);
        None: await `still_stored`."""
        get_now = self._kv_get_now
        return None if get_now is None else get_now(key) == stored

    async def still_stored(self, key: str, stored: bytes) -> bool:
        """Whether the KV still holds exactly this value (not purged, expired or rewritten)."""
        return await self.kv.get(key) == stored

    # -- planning -------------------------------------------------------------------
    def plan(self, project_id: str, project_cache: dict[str, Any], controls: CacheControls,
             endpoint: str, raw: bytes, data: dict[str, Any]) -> CachePlan | None:
        """How this request uses the cache; None means BYPASS."""
        s = self.settings
        mode = controls.mode or project_cache.get("mode") or (
            "semantic" if s.semantic_cache else ("exact" if s.cache_enabled else "off"))
        if mode == "off" or endpoint not in CACHEABLE:
            return None
        n = data.get("n", 1)
        if isinstance(n, int) and n > 1 and s.cache_multi_choice == "bypass":
            return None
        temperature = data.get("temperature")
        if (s.cache_max_temperature is not None and isinstance(temperature, int | float)
                and temperature > s.cache_max_temperature):
            return None
        prefix = f"wlc{FORMAT_VERSION}:{project_id}:{controls.namespace}:"
        key = prefix + core.cache_key(raw, f"{project_id}\x00{controls.namespace}\x00{endpoint}")
        ttl = controls.ttl_s if controls.ttl_s is not None \
            else project_cache.get("ttl", s.cache_ttl_s)
        semantic = (mode == "semantic" and endpoint == "chat/completions"
                    and self.vectors is not None and self.embedder is not None)
        threshold = controls.threshold or project_cache.get("threshold") or s.semantic_threshold
        return CachePlan(project_id, endpoint, key, prefix, controls.read, controls.write,
                         ttl or None, semantic, float(threshold), raw)

    # -- reads ----------------------------------------------------------------------
    async def lookup(self, plan: CachePlan) -> CacheHit | None:
        if not plan.read:
            return None
        data = await self.kv.get(plan.key)
        entry = self._decode(plan.key, data) if data else None
        if entry is not None:
            return CacheHit(entry, "HIT", stored=data)
        if plan.semantic:
            return await self._semantic(plan)
        return None

    async def _semantic(self, plan: CachePlan) -> CacheHit | None:
        assert self.vectors is not None and self.embedder is not None
        plan.text = core.embed_text(plan.raw)
        if not plan.text:
            return None
        context = core.context_key(plan.raw, f"{plan.project_id}\x00chat/completions")
        plan.vector = (await self.embedder.embed([plan.text]))[0]
        plan.vector_ns = f"{plan.prefix}{self.embedder.name}:{len(plan.vector)}:{context}"
        hits = await self.vectors.search(plan.vector_ns, plan.vector, SEMANTIC_CANDIDATES,
                                         plan.threshold)
        for entry_id, score in hits:
            data = await self.kv.get(plan.prefix + entry_id)
            entry = CacheEntry.decode(data) if data else None
            if entry is None:  # expired or evicted: drop its vector too
                await self.vectors.remove(plan.vector_ns, entry_id)
                continue
            if entry.query is not None and verify(plan.text, entry.query).ok:
                return CacheHit(entry, "SEMANTIC_HIT", score)
        return None

    # -- single flight --------------------------------------------------------------
    async def wait_or_lead(self, plan: CachePlan) -> CacheHit | None:
        """Wait for an identical request already in flight, or become its leader.

        Returns the leader's entry, or None when the caller must go upstream itself (it is
        the leader, or the leader failed, or the bounded wait ran out).
        """
        wait_s = self.settings.cache_lock_wait_s
        flight = self._flights.get(plan.key)
        if flight is not None:  # same process: one future, no polling
            try:
                entry = await asyncio.wait_for(asyncio.shield(flight), wait_s)
            except TimeoutError:
                return None
            return CacheHit(entry, "HIT") if entry is not None else None
        self._flights[plan.key] = asyncio.get_running_loop().create_future()
        plan.leader = True
        # Other processes (Redis): a short lock; losers poll for the entry, bounded.
        plan.locked = await self.kv.add(plan.key + ":lock", b"1", wait_s)
        if plan.locked:
            return None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            data = await self.kv.get(plan.key)
            if data is not None and (entry := CacheEntry.decode(data)) is not None:
                self._finish(plan, entry)
                return CacheHit(entry, "HIT")
            if await self.kv.add(plan.key + ":lock", b"1", wait_s):
                plan.locked = True
                return None
        return None

    def _finish(self, plan: CachePlan, entry: CacheEntry | None) -> None:
        flight = self._flights.pop(plan.key, None) if plan.leader else None
        if flight is not None and not flight.done():
            flight.set_result(entry)
        plan.leader = False

    async def complete(self, plan: CachePlan, entry: CacheEntry | None) -> None:
        """Store the leader's result (None: failed / not cacheable) and release waiters."""
        try:
            if entry is not None and plan.write:
                await self.store(plan, entry)
        finally:
            self._finish(plan, entry)
            if plan.locked:
                plan.locked = False
                await self.kv.delete(plan.key + ":lock")

    # -- writes ---------------------------------------------------------------------
    async def store(self, plan: CachePlan, entry: CacheEntry) -> None:
        if plan.semantic:
            entry.query = plan.text if plan.text is not None else core.embed_text(plan.raw)
        await self.kv.set(plan.key, entry.encode(), plan.ttl_s)
        if plan.semantic and entry.query and self.vectors is not None and self.embedder:
            if plan.vector is None:
                plan.vector = (await self.embedder.embed([entry.query]))[0]
                context = core.context_key(plan.raw, f"{plan.project_id}\x00chat/completions")
                plan.vector_ns = f"{plan.prefix}{self.embedder.name}:{len(plan.vector)}:{context}"
            await self.vectors.add(plan.vector_ns, plan.key[len(plan.prefix):], plan.vector)

    async def purge(self, project_id: str, namespace: str | None = None,
                    request: tuple[str, bytes] | None = None) -> int:
        """Delete the entry of one request ((endpoint, body)), or every entry of a namespace,
        or of the whole project. Vectors of deleted entries are dropped lazily."""
        base = f"wlc{FORMAT_VERSION}:{project_id}:"
        if request is not None:
            endpoint, body = request
            ns = namespace or ""
            key = core.cache_key(body, f"{project_id}\x00{ns}\x00{endpoint}")
            return int(await self.kv.delete(f"{base}{ns}:{key}"))
        return await self.kv.delete_prefix(base + (f"{namespace}:" if namespace is not None
                                                   else ""))
