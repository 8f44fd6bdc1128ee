"""Adapters of each seam, as parametrised fixtures: a contract test is written once and
runs against every adapter. PostgreSQL and Redis must be running (`make services`);
their URLs can be overridden with WATCHLLM_TEST_POSTGRES_URL / WATCHLLM_TEST_REDIS_URL."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_clickhouse

PG_URL = os.environ.get(
    "WATCHLLM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("WATCHLLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(params=["sqlite", "postgres", "d1"])
async def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "d1":  # D1Database over a fake that answers like the JS binding
        from tests.cloudflare.fakes import FakeD1
        from watchllm.env.cloudflare.d1 import D1Database

        yield D1Database(FakeD1())
        return
    if request.param == "sqlite":
        from watchllm.env.embedded.sqlite import SqliteDatabase

        db: Any = SqliteDatabase(tmp_path / "contract.db")
        yield db
        await db.close()
        return
    import asyncpg

    from watchllm.env.selfhosted.postgres import PostgresDatabase

    schema = "contract_" + secrets.token_hex(5)
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    db = await PostgresDatabase.connect(f"{PG_URL}{sep}search_path={schema}", pool_size=4)
    yield db
    await db.close()
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()


def _redis_client() -> Any:
    from watchllm.env.selfhosted.redis import connect

    return connect(REDIS_URL, max_connections=8)


@pytest.fixture(params=["memory", "redis", "redis_lean", "workers_kv"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "workers_kv":  # Workers KV limits enforced by the fake (TTL >= 60 s)
        from tests.cloudflare.fakes import FakeKV
        from watchllm.env.cloudflare.kv import WorkersKeyValue

        yield WorkersKeyValue(FakeKV(page_size=2))
        return
    if request.param == "memory":
        from watchllm.env.embedded.memory import LruKeyValue

        store: Any = LruKeyValue()
        yield store
        await store.close()
        return
    from watchllm.env.selfhosted.redis import RedisKeyValue
    from watchllm.env.selfhosted.resp import LeanRedis

    fast = LeanRedis(REDIS_URL) if request.param == "redis_lean" else None
    store = RedisKeyValue(_redis_client(), prefix=f"test:{secrets.token_hex(4)}:", fast=fast)
    yield store
    await store.delete_prefix("")
    await store.close()
    if fast is not None:
        await fast.close()


@pytest.fixture(params=["memory", "redis", "durable_object"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "durable_object":
        from tests.cloudflare.fakes import FakeDurableObjectNamespace
        from watchllm.env.cloudflare.limiter import DurableObjectCounters

        yield DurableObjectCounters(FakeDurableObjectNamespace())
        return
    if request.param == "memory":
        from watchllm.env.embedded.memory import MemoryCounters

        c: Any = MemoryCounters()
        yield c
        await c.close()
        return
    from watchllm.env.selfhosted.redis import RedisCounters

    c = RedisCounters(_redis_client(), prefix=f"test:{secrets.token_hex(4)}:")
    yield c
    await c.close()


@pytest.fixture(params=["chdb", "http"])
async def analytics(request: pytest.FixtureRequest, chdb_url: str) -> AsyncIterator[Any]:
    a = await fresh_clickhouse(chdb_url, schema=False)
    if request.param == "http":  # the Workers adapter, over a fake HTTP interface on chDB
        from tests.contract.clickhouse_http_fake import ChdbHttp
        from watchllm.env.cloudflare.clickhouse_http import ClickHouseHttp

        yield ClickHouseHttp(ChdbHttp(chdb_url), f"http://writer:pw@clickhouse/{a.database}")
    else:
        yield a
    await a.command(f"DROP DATABASE IF EXISTS {a.database}")
    await a.close()


class QueueUnderTest:
    """An EventQueue and how to see what it delivered (ids, in delivery order)."""

    def __init__(self, queue: Any, delivered: Callable[[], Awaitable[list[str]]]) -> None:
        self.queue = queue
        self.delivered = delivered


@pytest.fixture(params=["memory", "pipeline", "queues"])
async def event_queue(
    request: pytest.FixtureRequest, chdb_url: str, tmp_path: Path
) -> AsyncIterator[QueueUnderTest]:
    if request.param == "queues":  # producer -> fake Queue -> the Worker's consumer -> chDB
        from tests.cloudflare.fakes import FakeQueue
        from watchllm.env.cloudflare.consumer import consume
        from watchllm.env.cloudflare.queues import QueuesEventQueue

        fq = FakeQueue()
        cq = QueuesEventQueue(fq)
        ch = await fresh_clickhouse(chdb_url)

        async def consumed() -> list[str]:
            while fq.messages:
                await consume(fq.take_batch(), ch)
            rows = await ch.query("SELECT event_id FROM events FINAL ORDER BY event_id")
            return [r["event_id"] for r in rows]

        yield QueueUnderTest(cq, consumed)
        await cq.close()
        await ch.command(f"DROP DATABASE IF EXISTS {ch.database}")
        await ch.close()
        return
    if request.param == "memory":
        from watchllm.events.memory_queue import MemoryEventQueue

        mq = MemoryEventQueue(10_000)

        async def drained() -> list[str]:
            return [e.get("event_id") for e in mq.snapshot() if isinstance(e, dict)]

        yield QueueUnderTest(mq, drained)
        await mq.close()
        return
    from watchllm.events.pipeline import EventPipeline

    sink = await fresh_clickhouse(chdb_url)
    pq = await EventPipeline(sink, tmp_path / "spool", flush_ms=20).start()

    async def stored() -> list[str]:
        rows = await sink.query("SELECT event_id FROM events FINAL ORDER BY event_id")
        return [r["event_id"] for r in rows]

    yield QueueUnderTest(pq, stored)
    await pq.close()
    await sink.command(f"DROP DATABASE IF EXISTS {sink.database}")
    await sink.close()
