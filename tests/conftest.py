"""Shared by every test directory: the one chDB engine of this pytest process.

chDB allows one data directory per process and takes ~2 s to open, so the whole session
uses one: `chdb_url` opens it on first use (`watchllm.env.selfhosted.clickhouse.chdb_path`
keeps it for the process, and any other fixture that asks for it gets the same path).
Tests isolate themselves with a database each (`fresh_clickhouse`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("chdb")
    from watchllm.env.selfhosted.clickhouse import chdb_path

    return "chdb://" + chdb_path(os.environ.get("WATCHLLM_TEST_CHDB")
                                 or tmp_path_factory.mktemp("chdb"))


async def fresh_clickhouse(url: str, ttl_days: int = 0, schema: bool = True) -> Any:
    """A ClickHouseAnalytics on a new, empty database (with the events schema)."""
    from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
    from watchllm.events.clickhouse_schema import ensure_schema

    name = "t_" + secrets.token_hex(6)
    admin = ClickHouseAnalytics(url)
    await admin.command(f"CREATE DATABASE {name}")
    await admin.close()
    analytics = ClickHouseAnalytics(url, database=name)
    if schema:
        await ensure_schema(analytics, ttl_days)
    return analytics


@pytest.fixture
async def clickhouse(chdb_url: str) -> AsyncIterator[Any]:
    analytics = await fresh_clickhouse(chdb_url)
    yield analytics
    await analytics.command(f"DROP DATABASE IF EXISTS {analytics.database}")
    await analytics.close()


async def eventually(check: Callable[[], Any], within_s: float = 10.0, every: float = 0.02) -> None:
    """Await until `check()` (sync or async) is truthy; fail after `within_s` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(every)
