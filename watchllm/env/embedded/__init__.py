"""The embedded runtime: zero configuration, one process, everything under the data dir."""

from __future__ import annotations

import importlib.util

from watchllm.env.base import Analytics, Check, Env, EventQueue
from watchllm.events.memory_queue import MemoryEventQueue
from watchllm.settings import Settings


def sqlite_path(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") or ":memory:"
    if url == "sqlite://" or url == ":memory:":
        return ":memory:"
    return str(settings.data_dir / "watchllm.db")


async def build_env(settings: Settings) -> Env:
    # Imported here, not at module level: `watchllm.env.embedded.memory` is also used
    # where sqlite3, httptools and aiohttp do not exist (the Cloudflare Worker).
    from watchllm.env.embedded.memory import LruKeyValue, MemoryCounters
    from watchllm.env.embedded.sqlite import SqliteDatabase
    from watchllm.env.embedded.vectors import CoreVectorIndex
    from watchllm.env.http_lean import make_http_client
    from watchllm.metadata.migrate import migrate

    db = SqliteDatabase(sqlite_path(settings))
    await migrate(db)

    async def check_db() -> None:
        await db.fetch_one("SELECT 1 AS ok")

    checks: dict[str, Check] = {"metadata": check_db}
    events, analytics = await _events(settings, checks)
    return Env(
        mode="embedded",
        settings=settings,
        db=db,
        kv=LruKeyValue(settings.cache_max_bytes),
        counters=MemoryCounters(),
        events=events,
        http=make_http_client(settings.upstream_pool_size),
        vectors=CoreVectorIndex(),
        analytics=analytics,
        checks=checks,
    )


async def _events(
    settings: Settings, checks: dict[str, Check]
) -> tuple[EventQueue, Analytics | None]:
    """chDB under the data dir, fed by the durable pipeline, when chdb is installed; the
    in-memory queue when it is not or WATCHLLM_CLICKHOUSE_URL=off."""
    if settings.clickhouse_url == "off" or (
        not settings.clickhouse_url and importlib.util.find_spec("chdb") is None
    ):
        return MemoryEventQueue(settings.events_buffer), None
    from watchllm.env.selfhosted import build_pipeline
    from watchllm.events.clickhouse_schema import clickhouse_url

    return await build_pipeline(settings, clickhouse_url(settings), checks)
