"""Project settings, cached per worker for a few seconds (they are read on every request)."""

from __future__ import annotations

import time
from typing import Any

from watchllm.errors import NotFoundError
from watchllm.metadata.store import MetadataStore


class ProjectSettingsCache:
    def __init__(self, store: MetadataStore, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}

    async def get(self, project_id: str) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get(project_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            settings = (await self.store.get_project(project_id)).settings
        except NotFoundError:  # the anonymous "default" project has no row
            settings = {}
        self._cache[project_id] = (settings, now + self.ttl_s)
        return settings

    def forget(self, project_id: str) -> None:
        self._cache.pop(project_id, None)


class ProviderKeyCache:
    """Each project's own provider keys (decrypted), cached per worker for a few seconds.

    Most projects have none: that answer is cached too, so the common case is one dict
    lookup. A key added or removed through the admin API applies within the TTL.
    """

    def __init__(self, plans: Any, ttl_s: float) -> None:
        self.plans = plans  # watchllm.metadata.plans.PlanStore
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[dict[str, str], float]] = {}

    async def get(self, project_id: str) -> dict[str, str]:
        now = time.monotonic()
        hit = self._cache.get(project_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        keys: dict[str, str] = {}
        for record in await self.plans.list_provider_keys(project_id):
            secret = await self.plans.get_provider_key(project_id, record["provider"])
            if secret:
                keys[record["provider"]] = secret
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[project_id] = (keys, now + self.ttl_s)
        return keys

    def forget(self, project_id: str) -> None:
        self._cache.pop(project_id, None)
