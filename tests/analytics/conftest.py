"""An in-process gateway whose events go through the real pipeline into a fresh chDB
database (the session's one engine, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_clickhouse
from tests.ingest.helpers import ADMIN
from watchllm.app import Gateway
from watchllm.env.base import Env
from watchllm.env.embedded import build_env
from watchllm.events.pipeline import EventPipeline
from watchllm.settings import Settings, load_settings


@pytest.fixture
async def gw(tmp_path: Path, chdb_url: str) -> AsyncIterator[Gateway]:
    settings = load_settings({"WATCHLLM_ADMIN_KEY": ADMIN, "WATCHLLM_DATA_DIR": str(tmp_path),
                              "WATCHLLM_CLICKHOUSE_URL": "off", "WATCHLLM_KEY_CACHE_TTL": "0"},
                             None)

    async def factory(s: Settings) -> Env:
        env = await build_env(s)
        ch = await fresh_clickhouse(chdb_url)
        env.analytics = ch
        env.events = await EventPipeline(ch, tmp_path / "spool", flush_ms=20).start()
        return env

    gateway = Gateway(settings, factory)
    await gateway.startup()
    yield gateway
    ch: Any = gateway.env.analytics
    database = ch.database
    await gateway.shutdown()
    from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics

    admin = ClickHouseAnalytics(chdb_url)
    await admin.command(f"DROP DATABASE IF EXISTS {database}")
    await admin.close()
