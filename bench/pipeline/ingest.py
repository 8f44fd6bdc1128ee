"""Sustained ingestion into chDB through the whole pipeline (put → spool → RowBinary →
insert), beside the ceiling measured in the same run: encode + raw_insert of the same
events with no spool and no queue.

    .venv/bin/python bench/pipeline/ingest.py [--events 300000] [--batch 20000] [--fsync interval]

Each event is a gateway prompt_call (~30 fields, ~550 bytes of JSON). Events are created
on the fly, as the gateway would, and put() yields to the loop every 1,000 events; the
producer pauses while more than 100,000 events wait in memory (put() itself never waits:
past its buffer it drops and counts), so the rate is what the pipeline sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.pipeline.helpers import make_event
from watchllm import core
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.clickhouse_schema import ensure_schema
from watchllm.events.pipeline import EventPipeline
from watchllm.events.schema import EVENTS_COLUMNS

BASE = make_event(0)


def event(i: int, run: str) -> dict[str, Any]:
    return {**BASE, "event_id": f"{run}-{i}", "request_id": f"{run}-{i}",
            "timestamp": BASE["timestamp"] + i, "latency_ms": 50.0 + i % 200,
            "model": ("gpt-4o-mini", "claude-3-5-haiku", "gpt-4o")[i % 3]}


async def fresh(url: str, name: str) -> ClickHouseAnalytics:
    admin = ClickHouseAnalytics(url)
    await admin.command(f"DROP DATABASE IF EXISTS {name}")
    await admin.command(f"CREATE DATABASE {name}")
    await admin.close()
    a = ClickHouseAnalytics(url, database=name)
    await ensure_schema(a, 0)
    return a


async def direct(url: str, n: int, batch: int) -> float:
    """The ceiling: encode and insert batches back to back, nothing else."""
    a = await fresh(url, "bench_direct")
    cols = list(EVENTS_COLUMNS)
    names = [c for c, _ in cols]
    started = time.perf_counter()
    for lo in range(0, n, batch):
        rows = [event(i, "d") for i in range(lo, min(n, lo + batch))]
        await a.insert_rowbinary("events", names, core.encode_rowbinary(cols, rows))
    took = time.perf_counter() - started
    await a.close()
    return n / took


async def pipeline(url: str, n: int, batch: int, fsync: str, spool: Path) -> dict[str, float]:
    a = await fresh(url, "bench_pipeline")
    p = await EventPipeline(a, spool, batch_size=batch, flush_ms=200, fsync=fsync,  # type: ignore[arg-type]
                            buffer=200_000).start()
    put_s = 0.0
    started = time.perf_counter()
    for lo in range(0, n, 1000):
        t = time.perf_counter()
        for i in range(lo, min(n, lo + 1000)):
            p.put(event(i, "p"))
        put_s += time.perf_counter() - t
        await asyncio.sleep(0)
        # Offered faster than the disk takes it: pace like a client at the pipeline's rate.
        while p.depth() - p.spool.pending_events > 100_000:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    produced = time.perf_counter() - started
    await p.flush()
    took = time.perf_counter() - started
    rows = await a.query("SELECT count() AS n, uniqExact(event_id) AS u FROM events")
    m = p.snapshot()
    await p.close()
    await a.close()
    assert rows[0]["n"] == rows[0]["u"] == n - m["dropped"], (rows, m)
    return {"rate": (n - m["dropped"]) / took, "produce_rate": n / produced,
            "put_us": put_s / n * 1e6,
            "dropped": m["dropped"], "batches": m["batches_sent"],
            "insert_ms_avg": m["insert_seconds_total"] / max(1, m["batches_sent"]) * 1000}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-bench-"))
    url = f"chdb://{tmp / 'ch'}"
    print(f"$ {' '.join(sys.argv)}   (core backend: {core.BACKEND})")
    try:
        ceiling = await direct(url, args.events, args.batch)
        print(f"direct encode+insert (ceiling): {ceiling:10,.0f} events/s")
        r = await pipeline(url, args.events, args.batch, args.fsync, tmp / "spool")
        print(f"pipeline end to end:            {r['rate']:10,.0f} events/s "
              f"({r['rate'] / ceiling:.0%} of ceiling; {args.events:,} events, "
              f"{r['batches']:.0f} batches, avg insert {r['insert_ms_avg']:.0f} ms)")
        print(f"producer side: put() {r['put_us']:.2f} us/event, "
              f"{r['produce_rate']:,.0f} events/s offered, dropped {r['dropped']:.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
