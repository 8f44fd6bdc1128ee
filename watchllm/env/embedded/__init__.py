"""The embedded runtime: zero configuration, one process, everything under the data dir."""

from __future__ import annotations

from watchllm.env.base import Env
from watchllm.env.embedded.memory import LruKeyValue, MemoryCounters
from watchllm.env.embedded.sqlite import SqliteDatabase
from watchllm.env.embedded.vectors import CoreVectorIndex
from watchllm.env.http_aiohttp import AiohttpClient
from watchllm.events.memory_queue import MemoryEventQueue
from watchllm.metadata.migrate import migrate
from watchllm.settings import Settings


def sqlite_path(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") or ":memory:"
    if url == "sqlite://" or url == ":memory:":
        return ":memory:"
    return str(settings.data_dir / "watchllm.db")


async def build_env(settings: Settings) -> Env:
    db = SqliteDatabase(sqlite_path(settings))
    await migrate(db)

    async def check_db() -> None:
        await db.fetch_one("SELECT 1 AS ok")

    return Env(
        mode="embedded",
        settings=settings,
        db=db,
        kv=LruKeyValue(settings.cache_max_bytes),
        counters=MemoryCounters(),
        events=MemoryEventQueue(settings.events_buffer),
        http=AiohttpClient(settings.upstream_pool_size),
        vectors=CoreVectorIndex(),
        checks={"metadata": check_db},
    )
