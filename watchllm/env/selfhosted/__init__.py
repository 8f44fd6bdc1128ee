"""The self-hosted runtime: PostgreSQL (metadata), Redis (cache, counters), ClickHouse
(analytics, fed by the durable event pipeline). Many workers, many machines."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchllm.env.base import Analytics, Check, Counters, Env, EventQueue, KeyValue
from watchllm.env.embedded.memory import LruKeyValue, MemoryCounters
from watchllm.env.http_lean import make_http_client
from watchllm.env.selfhosted import pgvector
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.env.selfhosted.postgres import PostgresDatabase
from watchllm.errors import ServiceUnavailableError
from watchllm.events.clickhouse_schema import clickhouse_url, ensure_schema
from watchllm.events.memory_queue import MemoryEventQueue
from watchllm.events.pipeline import EventPipeline
from watchllm.metadata.migrate import migrate, require_current
from watchllm.settings import Settings, SettingsError

log = logging.getLogger("watchllm.env")


def spool_dir(settings: Settings) -> Path:
    return settings.spool_dir or settings.data_dir / "spool"


async def build_pipeline(
    settings: Settings, url: str, checks: dict[str, Check]
) -> tuple[EventQueue, Analytics | None]:
    """The event pipeline into ClickHouse at `url` (or the in-memory queue when "off")."""
    if url == "off":
        return MemoryEventQueue(settings.events_buffer), None
    analytics = ClickHouseAnalytics(url, idle=settings.analytics_idle,
                                    ttl_days=settings.event_ttl_days)
    try:
        await ensure_schema(analytics, settings.event_ttl_days)
    except (ConnectionError, ValueError) as e:
        # Start anyway: events wait in the spool until ClickHouse answers.
        log.warning("ClickHouse schema not checked (%s); events are spooled meanwhile", e)
    pipeline = EventPipeline(
        analytics,
        spool_dir(settings),
        batch_size=settings.events_batch_size,
        flush_ms=settings.events_flush_ms,
        linger_ms=settings.events_linger_ms,
        max_bytes=settings.spool_max_bytes,
        buffer=settings.events_buffer,
        idle=settings.analytics_idle,
    )
    await pipeline.start()

    async def check_spool() -> None:
        used = pipeline.spool.pending_bytes
        if used > 0.9 * settings.spool_max_bytes:
            raise ServiceUnavailableError(
                f"event spool at {used} of {settings.spool_max_bytes} bytes: "
                "new events will be dropped"
            )

    checks["clickhouse"] = analytics.ping
    checks["event_spool"] = check_spool
    return pipeline, analytics


async def build_env(settings: Settings) -> Env:
    if not settings.database_url.startswith(("postgres://", "postgresql://")):
        raise SettingsError("WATCHLLM_MODE=self_hosted needs WATCHLLM_DATABASE_URL=postgresql://...")
    db = await PostgresDatabase.connect(
        settings.database_url, settings.pg_pool_size, settings.connect_timeout_s
    )
    if settings.auto_migrate:
        await migrate(db)
    else:
        await require_current(db)
    checks: dict[str, Check] = {"postgres": db.ping}
    closers: list[Callable[[], Awaitable[None]]] = []

    kv: KeyValue
    counters: Counters
    if settings.redis_url:
        from watchllm.env.selfhosted.redis import RedisCounters, RedisKeyValue, connect
        from watchllm.env.selfhosted.resp import LeanRedis

        client = connect(settings.redis_url, max_connections=max(16, settings.upstream_pool_size))
        # The hot-path commands go through the lean pipelined client (plain redis:// only;
        # TLS and sentinels stay on redis-py, which also serves everything else).
        fast = LeanRedis(settings.redis_url) if settings.redis_url.startswith("redis://") \
            else None
        rkv = RedisKeyValue(client, fail_mode=settings.redis_fail_mode, owns_client=False,
                            fast=fast)
        kv = rkv
        counters = RedisCounters(client, fail_mode=settings.redis_fail_mode, owns_client=False,
                                 fast=fast, timeout_s=settings.limits_timeout_s)
        if fast is not None:
            closers.append(fast.close)
        checks["redis"] = rkv.ping
        closers.append(lambda: client.aclose())
    else:
        log.warning("no WATCHLLM_REDIS_URL: cache and limits are per process")
        kv, counters = LruKeyValue(), MemoryCounters()

    vectors = await pgvector.from_settings(settings)  # None: semantic cache off
    if vectors is not None:
        checks["pgvector"] = vectors.ping
    events, analytics = await build_pipeline(settings, clickhouse_url(settings), checks)
    return Env(
        mode="self_hosted",
        settings=settings,
        db=db,
        kv=kv,
        counters=counters,
        events=events,
        http=make_http_client(settings.upstream_pool_size),
        vectors=vectors,
        analytics=analytics,
        checks=checks,
        closers=closers,
    )
