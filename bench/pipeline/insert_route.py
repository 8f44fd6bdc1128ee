"""chDB insert throughput and CPU per row: plain RowBinary (`raw_insert`, the route before)
vs `INSERT ... SELECT * FROM file()` with LowCardinality parsed as plain types (the route
`ClickHouseAnalytics` takes now), side by side, interleaved, in one run. Not a test.

    .venv/bin/python bench/pipeline/insert_route.py [--batch 20000] [--rounds 6]

Into the real schema (ReplacingMergeTree `events` + the `usage_hourly` view), with a
deduplication token per insert, as the pipeline sends them. CPU is this process's
user+system time (chDB's engine threads included) per row.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.pipeline.ingest import event, fresh
from watchllm import core
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.schema import EVENTS_COLUMNS


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-bench-"))
    url = f"chdb://{tmp / 'ch'}"
    cols = list(EVENTS_COLUMNS)
    names = [c for c, _ in cols]
    print(f"$ {' '.join(sys.argv)}   (core backend: {core.BACKEND})")
    try:
        await fresh(url, "bench_route")
        routes = {
            "raw_insert RowBinary (before)": ClickHouseAnalytics(url, "bench_route", schema={}),
            "SELECT FROM file(), plain types (now)": ClickHouseAnalytics(url, "bench_route"),
        }
        wall = dict.fromkeys(routes, float("inf"))
        cpu = dict.fromkeys(routes, float("inf"))
        n = 0
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, sink in routes.items():
                rows = [event(i, f"{r}{name[:3]}") for i in range(n, n + args.batch)]
                n += args.batch
                data = core.encode_rowbinary(cols, rows)
                w, c = time.perf_counter(), time.process_time()
                await sink.insert_rowbinary("events", names, data, dedup_token=f"b{n}")
                w, c = time.perf_counter() - w, time.process_time() - c
                if r:
                    wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
        got = await routes["raw_insert RowBinary (before)"].query(
            "SELECT count() AS n, (SELECT sum(requests) FROM usage_hourly) AS v FROM events")
        assert got[0]["n"] == got[0]["v"] == n, got
        print(f"\n{args.batch:,} events per insert, best of {args.rounds} interleaved rounds\n")
        print("| route | rows/s | CPU µs/row |\n| --- | ---: | ---: |")
        for name in routes:
            print(f"| {name} | {args.batch / wall[name]:,.0f} | "
                  f"{cpu[name] / args.batch * 1e6:.2f} |")
        first, second = routes
        print(f"\nnow vs before: {wall[first] / wall[second]:.2f}x rows/s, "
              f"{cpu[first] / cpu[second]:.2f}x less CPU per row")
        for sink in routes.values():
            await sink.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
