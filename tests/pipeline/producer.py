"""A child process for the kill -9 test: `produce` events into chDB through the pipeline,
reporting how many are durable (in the spool) as it goes; `check` reopens the same
directories, lets the pipeline drain what the killed producer left, and reports counts.

    python -m tests.pipeline.producer produce DIR
    python -m tests.pipeline.producer check DIR DURABLE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.pipeline.helpers import make_event
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.clickhouse_schema import ensure_schema
from watchllm.events.pipeline import EventPipeline


async def open_pipeline(root: Path, slow_ack: bool = False, batch_size: int = 2000
                        ) -> tuple[ClickHouseAnalytics, EventPipeline]:
    analytics = ClickHouseAnalytics(f"chdb://{root / 'ch'}")
    await ensure_schema(analytics, 0)
    sink: Any = SlowAck(analytics) if slow_ack else analytics
    pipeline = EventPipeline(sink, root / "spool", batch_size=batch_size, flush_ms=20)
    return analytics, await pipeline.start()


class SlowAck:
    """The child's sink: returns 0.3 s after each insert, so the kill most likely lands
    between an insert and its ack (the window the deduplication token is for)."""

    def __init__(self, inner: ClickHouseAnalytics) -> None:
        self.inner = inner

    async def insert_rowbinary(self, table: str, columns: Any, data: bytes,
                               dedup_token: str | None = None) -> None:
        await self.inner.insert_rowbinary(table, columns, data, dedup_token)
        await asyncio.sleep(0.3)

    async def query(self, sql: str, params: Any = None) -> Any:
        return await self.inner.query(sql, params)

    async def close(self) -> None:
        await self.inner.close()


async def produce(root: Path) -> None:
    _, p = await open_pipeline(root, slow_ack=True)
    print("ready", flush=True)
    i = 0
    while True:  # until killed
        for _ in range(500):
            p.put(make_event(i, run="k"))
            i += 1
        await asyncio.sleep(0.002)
        print(f"durable {p.metrics.spooled} sent {p.metrics.events_sent}", flush=True)


async def check(root: Path, durable: int) -> None:
    # A bigger batch than the producer's: reading from the ack on, the first batch would
    # not be the one in flight at the kill; the spool's replay makes it so (same token).
    analytics, p = await open_pipeline(root, batch_size=5000)
    recovered = p.depth()
    await p.flush()
    rows = await analytics.query(
        "SELECT count() AS n, uniqExact(event_id) AS u, "
        "countIf(event_id < {edge:String}) AS acked FROM events FINAL",
        {"edge": f"k-{durable:08d}"},
    )
    raw = await analytics.query("SELECT count() AS n FROM events")
    view = await analytics.query("SELECT sum(requests) AS n FROM usage_hourly")
    print(orjson.dumps({**rows[0], "raw": raw[0]["n"], "view": view[0]["n"],
                        "recovered": recovered}).decode())
    await p.close()
    await analytics.close()


if __name__ == "__main__":
    mode, root = sys.argv[1], Path(sys.argv[2])
    if mode == "produce":
        asyncio.run(produce(root))
    else:
        asyncio.run(check(root, int(sys.argv[3])))
