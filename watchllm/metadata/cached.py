"""Per-worker caches of what every request reads: project settings, a project's own
provider keys. Each answer is kept `ttl_s` seconds; an admin change made through this worker
drops it at once (`forget`), others see it within the TTL. A cached answer is handed out as
the same object while it does not change (the remembered-repeat path, proxy/hot.py, relies
on that); a hot entry is read again in the background before it expires (refresh.py)."""

from __future__ import annotations

from typing import Any

from watchllm.errors import NotFoundError
from watchllm.metadata.refresh import RefreshingCache
from watchllm.metadata.store import MetadataStore


class ProjectSettingsCache(RefreshingCache[str, dict[str, Any]]):
    def __init__(self, store: MetadataStore, ttl_s: float) -> None:
        super().__init__(self._settings, ttl_s, "project_settings")
        self.store = store

    async def _settings(self, project_id: str) -> dict[str, Any]:
        try:
            return (await self.store.get_project(project_id)).settings
        except NotFoundError:  # the anonymous "default" project has no row
            return {}


class ProviderKeyCache(RefreshingCache[str, dict[str, str]]):
    """Each project's own provider keys (decrypted). Most projects have none: that answer
    is cached too, so the common case is one dict lookup."""

    def __init__(self, plans: Any, ttl_s: float) -> None:
        super().__init__(self._keys, ttl_s, "provider_keys")
        self.plans = plans  # watchllm.metadata.plans.PlanStore

    async def _keys(self, project_id: str) -> dict[str, str]:
        keys: dict[str, str] = {}
        for record in await self.plans.list_provider_keys(project_id):
            secret = await self.plans.get_provider_key(project_id, record["provider"])
            if secret:
                keys[record["provider"]] = secret
        return keys
