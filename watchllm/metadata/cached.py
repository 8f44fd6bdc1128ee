"""Per-worker caches of what every request reads: project settings, a project's own
provider keys. Each answer is kept `ttl_s` seconds; an admin change made through this worker
drops it at once (`forget`), others see it within the TTL. A cached answer is handed out as
the same object until then (the remembered-repeat path, proxy/hot.py, relies on that)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from watchllm.errors import NotFoundError
from watchllm.metadata.store import MetadataStore

V = TypeVar("V")
_MAX_CACHED = 100_000


class _ProjectCache(Generic[V]):
    def __init__(self, load: Callable[[str], Awaitable[V]], ttl_s: float) -> None:
        self._load = load
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[V, float]] = {}

    async def get(self, project_id: str) -> V:
        now = time.monotonic()
        hit = self._cache.get(project_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        value = await self._load(project_id)
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        self._cache[project_id] = (value, now + self.ttl_s)
        return value

    def forget(self, project_id: str) -> None:
        self._cache.pop(project_id, None)


class ProjectSettingsCache(_ProjectCache[dict[str, Any]]):
    def __init__(self, store: MetadataStore, ttl_s: float) -> None:
        super().__init__(self._settings, ttl_s)
        self.store = store

    async def _settings(self, project_id: str) -> dict[str, Any]:
        try:
            return (await self.store.get_project(project_id)).settings
        except NotFoundError:  # the anonymous "default" project has no row
            return {}


class ProviderKeyCache(_ProjectCache[dict[str, str]]):
    """Each project's own provider keys (decrypted). Most projects have none: that answer
    is cached too, so the common case is one dict lookup."""

    def __init__(self, plans: Any, ttl_s: float) -> None:
        super().__init__(self._keys, ttl_s)
        self.plans = plans  # watchllm.metadata.plans.PlanStore

    async def _keys(self, project_id: str) -> dict[str, str]:
        keys: dict[str, str] = {}
        for record in await self.plans.list_provider_keys(project_id):
            secret = await self.plans.get_provider_key(project_id, record["provider"])
            if secret:
                keys[record["provider"]] = secret
        return keys
