"""The Cloudflare Workers runtime: D1, KV, Queues, Vectorize, a Durable Object, `fetch`.

    settings = settings_from_env(js_env)           # the Worker's vars and secrets
    env = await build_env(js_env, ctx, settings)   # once per isolate (Gateway start-up)

Binding names (deploy/cloudflare/wrangler.toml): DB (D1, required), CACHE (KV),
EVENTS and EVENTS_DLQ (Queues), VECTORS (Vectorize), LIMITER (Durable Object).
A missing optional binding degrades to an in-isolate stand-in, logged at start-up:
per-isolate cache, per-isolate limits (not shared: each isolate counts alone), events
kept in memory and lost. Nothing outside this package knows which runtime it is on.
"""

from __future__ import annotations

import logging
from typing import Any

from watchllm.env.base import Check, Env, EventQueue, KeyValue, VectorIndex
from watchllm.env.cloudflare._js import IN_PYODIDE, is_null, js, unwrap
from watchllm.settings import Settings, load_settings

log = logging.getLogger("watchllm.cloudflare")
__all__ = ["build_env", "settings_from_env", "string_vars"]


def string_vars(js_env: Any) -> dict[str, str]:
    """The Worker's text vars and secrets (bindings are objects and are left out)."""
    raw = unwrap(js_env)
    names = list(js.Object.keys(raw)) if IN_PYODIDE else list(vars(raw))
    out: dict[str, str] = {}
    for name in names:
        value = getattr(raw, name, None)
        if isinstance(value, str):
            out[str(name)] = value
    return out


def settings_from_env(js_env: Any) -> Settings:
    environ = string_vars(js_env)
    environ.setdefault("WATCHLLM_MODE", "cloudflare")
    return load_settings(environ=environ, dotenv=None)


def binding(js_env: Any, name: str) -> Any:
    value = getattr(unwrap(js_env), name, None)
    return None if is_null(value) else value


async def build_env(js_env: Any, ctx: Any, settings: Settings) -> Env:
    """`ctx` is the first request's ExecutionContext (unused: each request binds its own
    through `context.current_ctx`); kept in the signature for symmetry with the entry."""
    from watchllm.env.cloudflare.context import wait_until
    from watchllm.env.cloudflare.d1 import D1Database
    from watchllm.env.cloudflare.http_fetch import FetchHttpClient
    from watchllm.metadata import refresh

    # A metadata reload ahead of expiry outlives the request that started it: the runtime
    # keeps that request alive until the reload ends.
    refresh.spawn = wait_until

    db_binding = binding(js_env, "DB")
    if db_binding is None:
        raise RuntimeError("the Worker has no D1 binding named DB (see wrangler.toml)")
    db = D1Database(db_binding)
    http = FetchHttpClient()

    async def check_db() -> None:
        await db.fetch_one("SELECT 1 AS ok")

    checks: dict[str, Check] = {"metadata": check_db}
    analytics = None
    if settings.clickhouse_url and settings.clickhouse_url != "off":
        from watchllm.env.cloudflare.clickhouse_http import ClickHouseHttp

        analytics = ClickHouseHttp(http, settings.clickhouse_url)
    return Env(mode="cloudflare", settings=settings, db=db, kv=_kv(js_env, settings),
               counters=_counters(js_env), events=_events(js_env, settings), http=http,
               vectors=_vectors(js_env, settings), analytics=analytics, checks=checks)


def _kv(js_env: Any, settings: Settings) -> KeyValue:
    b = binding(js_env, "CACHE")
    if b is not None:
        from watchllm.env.cloudflare.kv import WorkersKeyValue

        return WorkersKeyValue(b)
    from watchllm.env.embedded.memory import LruKeyValue

    log.warning("no KV binding CACHE: the response cache is per isolate")
    return LruKeyValue(min(settings.cache_max_bytes, 32 << 20))


def _counters(js_env: Any) -> Any:
    b = binding(js_env, "LIMITER")
    if b is not None:
        from watchllm.env.cloudflare.limiter import DurableObjectCounters

        return DurableObjectCounters(b)
    from watchllm.env.embedded.memory import MemoryCounters

    log.warning("no Durable Object binding LIMITER: limits are counted per isolate")
    return MemoryCounters()


def _events(js_env: Any, settings: Settings) -> EventQueue:
    b = binding(js_env, "EVENTS")
    if b is not None:
        from watchllm.env.cloudflare.queues import QueuesEventQueue

        return QueuesEventQueue(b)
    from watchllm.events.memory_queue import MemoryEventQueue

    log.warning("no Queues binding EVENTS: events stay in memory")
    return MemoryEventQueue(min(settings.events_buffer, 10_000))


def _vectors(js_env: Any, settings: Settings) -> VectorIndex | None:
    b = binding(js_env, "VECTORS")
    if b is None or not settings.semantic_cache:
        return None
    from watchllm.env.cloudflare.vectorize import VectorizeIndex

    return VectorizeIndex(b)
