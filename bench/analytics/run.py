"""Time the analytics queries on a loaded chDB directory (bench/analytics/load.py).

    .venv/bin/python bench/analytics/run.py --dir /tmp/watchllm-bench-analytics [--repeat 7]

Runs the API's own query functions (watchllm.analytics.queries) through the Analytics
seam, as a request would, and prints min / median / max milliseconds. Baseline in the
same run: the same stats computed from the raw table alone (what the view saves).
Targets (docs/analytics.md): stats and timeseries <= 200 ms, a logs page <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm.analytics import queries
from watchllm.analytics.params import DAY_MS, METRICS, PERIODS, now_ms
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics

PROJECT = "proj_bench"
RAW_STATS = f"""SELECT count() AS requests, sum(tokens_input), sum(tokens_output),
    sum(cost_estimate_usd), avg(latency_ms), quantiles(0.5, 0.95, 0.99)(latency_ms),
    countIf({queries.ERROR}), countIf({queries.HIT})
FROM events WHERE project_id = {{project:String}} AND {queries.CALLS}
  AND timestamp >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC')
  AND timestamp < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')"""


async def timed(repeat: int, fn: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    result = await fn()  # warm-up (first read of the columns)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


async def main(directory: str, repeat: int) -> None:
    ch = ClickHouseAnalytics(f"chdb://{directory}")
    total = (await ch.query("SELECT count() AS c FROM events"))[0]["c"]
    mine = (await ch.query("SELECT count() AS c FROM events WHERE project_id = {p:String}",
                           {"p": PROJECT}))[0]["c"]
    print(f"{directory}: {total:,} events, {mine:,} in {PROJECT}; {repeat} timed runs each\n")
    now = now_ms()
    page1, _ = await queries.logs(ch, PROJECT, {}, None, None, None, None, 50)
    cursor = None
    for _ in range(10):  # the 11th page
        rows, _ = await queries.logs(ch, PROJECT, {}, None, None, None, cursor, 50)
        cursor = (rows[-1]["timestamp"], rows[-1]["event_id"])
    some_event = page1[25]["event_id"]
    some_run = page1[25]["run_id"]
    cases: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = [
        ("stats 30d (view + raw edges)", 200,
         lambda: queries.stats(ch, PROJECT, now - 30 * DAY_MS, now)),
        ("stats 24h, unaligned", 200, lambda: queries.stats(ch, PROJECT, now - DAY_MS, now)),
        ("stats 30d, all projects (admin)", 200,
         lambda: queries.stats(ch, None, now - 30 * DAY_MS, now)),
        ("  baseline: stats 30d from raw only", 0,
         lambda: ch.query(RAW_STATS, {"project": PROJECT, "start": now - 30 * DAY_MS,
                                      "end": now})),
        *((f"timeseries {p} (all metrics)", 200,
           (lambda p=p: queries.timeseries(ch, PROJECT, PERIODS[p],
                                           list(METRICS), now)))
          for p in PERIODS),
        ("logs page 1", 100, lambda: queries.logs(ch, PROJECT, {}, None, None, None, None, 50)),
        ("logs page 11 (cursor)", 100,
         lambda: queries.logs(ch, PROJECT, {}, None, None, None, cursor, 50)),
        ("logs model+status filter", 100,
         lambda: queries.logs(ch, PROJECT, {"model": "gpt-4o", "status": "error"}, None,
                              None, None, None, 50)),
        ("logs run_id filter", 100,
         lambda: queries.logs(ch, PROJECT, {"run_id": some_run}, None, None, None, None, 50)),
        ("logs q= (common text)", 100,
         lambda: queries.logs(ch, PROJECT, {}, "quarterly", None, None, None, 50)),
        ("logs q= (rare text, last 24h)", 100,
         lambda: queries.logs(ch, PROJECT, {}, "number 9999999", now - DAY_MS, None, None, 50)),
        ("event/{id}", 100, lambda: queries.event(ch, PROJECT, some_event)),
        ("runs/{id}", 100, lambda: queries.run(ch, PROJECT, some_run)),
    ]
    print(f"{'query':40s} {'min':>8s} {'median':>8s} {'max':>8s}  target")
    for name, target, fn in cases:
        times, _ = await timed(repeat, fn)
        med = statistics.median(times)
        verdict = "" if not target else ("ok" if med <= target else "OVER")
        print(f"{name:40s} {min(times):8.1f} {med:8.1f} {max(times):8.1f}  "
              f"{f'<= {target:.0f} ms ' + verdict if target else ''}")
    await ch.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/watchllm-bench-analytics")
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    asyncio.run(main(a.dir, a.repeat))
