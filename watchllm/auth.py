"""Who is calling: project keys (cached briefly in-process) and the admin key.

A revoked key stops working within `WATCHLLM_KEY_CACHE_TTL` seconds (default 5) on every
worker, because no worker uses a key record read longer ago than that. A key in use is read
again in the background before then (metadata/refresh.py), so its requests never wait.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from watchllm.errors import AuthenticationError, PermissionDeniedError
from watchllm.metadata.refresh import RefreshingCache
from watchllm.metadata.store import ApiKey, MetadataStore, now_ms, parse_key
from watchllm.settings import Settings

ANONYMOUS_PROJECT = "default"
_NEGATIVE_TTL_S = 1.0  # unknown key ids: cached briefly so a flood of bad keys stays cheap
_MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    project_id: str  # "*" for the admin key
    key_id: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...] | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes and self.project_id == "*"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise PermissionDeniedError(f"this key lacks the {scope!r} scope")

    def can_access(self, project_id: str) -> bool:
        return self.project_id in ("*", project_id)

    def check_model(self, model: str) -> None:
        if self.allowed_models is not None and model not in self.allowed_models:
            raise PermissionDeniedError(
                f"this key may not use model {model!r}", param="model", code="model_not_allowed"
            )


ADMIN = Principal("*", "admin", ("proxy", "ingest", "analytics", "admin"))
ANONYMOUS = Principal(ANONYMOUS_PROJECT, "anonymous", ("proxy", "ingest", "analytics"))

_MISSING = AuthenticationError(
    "Missing API key. Pass a WatchLLM key as 'Authorization: Bearer wl_...' (or x-api-key)."
)


class Authenticator:
    def __init__(self, store: MetadataStore, settings: Settings) -> None:
        self.store = store
        self.ttl = settings.key_cache_ttl_s
        self.require_auth = settings.require_auth
        self.admin_key = settings.admin_key
        # Key records by id, read again in the background before they expire (refresh.py):
        # concurrent requests of a key never queue on the store.
        self._keys: RefreshingCache[str, ApiKey | None] = RefreshingCache(
            store.get_key, self.ttl, "keys",
            ttl_of=lambda record: self.ttl if record else _NEGATIVE_TTL_S)
        # token -> (principal, its record, valid until, reload from): a repeat caller skips
        # parsing and hashing. It lives no longer than the record it was checked against,
        # so revocation timing is the key cache's.
        self._tokens: dict[str, tuple[Principal, ApiKey, float, float]] = {}

    async def authenticate(self, token: str | None, scope: str) -> Principal:
        principal = self.authenticate_now(token, scope)
        if principal is None:
            principal = await self._authenticate(token)
            principal.require(scope)
        return principal

    def authenticate_now(self, token: str | None, scope: str) -> Principal | None:
        """`authenticate` without a coroutine for a caller `cached` knows; None: await
        `authenticate`."""
        principal = self.cached(token) if token else None
        if principal is not None:
            principal.require(scope)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The caller behind a token this worker authenticated recently (no I/O), or None."""
        hit = self._tokens.get(token)
        if hit is None:
            return None
        now = time.monotonic()
        if hit[2] <= now:
            return None
        if now >= hit[3]:
            self._keys.peek(hit[1].id)  # due: the record is read again meanwhile
        return hit[0]

    async def _authenticate(self, token: str | None) -> Principal:
        if not token:
            if not self.require_auth:
                return ANONYMOUS
            raise AuthenticationError(_MISSING.message)
        if self.admin_key and hmac.compare_digest(token.encode(), self.admin_key.encode()):
            return ADMIN
        key_id = parse_key(token)
        record = await self._keys.get(key_id) if key_id else None
        if record is None or not record.matches(token):
            raise AuthenticationError("Incorrect API key provided.")
        if not record.active(now_ms()):
            what = "revoked" if record.revoked_at is not None else "expired"
            raise AuthenticationError(f"This API key has been {what}.", code=f"key_{what}")
        old = self._tokens.get(token)
        principal = old[0] if old is not None and old[1] is record else \
            Principal(record.project_id, record.id, record.scopes, record.allowed_models)
        entry = self._keys.entries.get(record.id)
        if entry is None or entry[0] is not record:
            # Not cached (a TTL of 0), or a read that began before a change made here
            # (a revoke): it answers this request, and is not kept.
            return principal
        _, reload_at, valid_until = entry  # the token lives no longer than its record
        if record.expires_at is not None:  # never trust the cache past the key's expiry
            valid_until = min(valid_until,
                              time.monotonic() + (record.expires_at - now_ms()) / 1000)
        if len(self._tokens) >= _MAX_CACHED:
            self._tokens.clear()
        self._tokens[token] = (principal, record, valid_until, reload_at)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a key from this worker's cache (after a revoke made through this worker)."""
        self._keys.forget(key_id)
        for token in [t for t, v in self._tokens.items() if v[1].id == key_id]:
            del self._tokens[token]
