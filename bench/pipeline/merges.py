"""What the raw tables' merge settings cost and buy, in the embedded engine at a gateway's
rate: events put at `--rate`/s for `--seconds` through the real pipeline into chDB (one
insert a second, as the gateway runs it), per configuration of the `events` table's merge
settings, interleaved over rounds, each on a fresh database. Not a test.

    .venv/bin/python bench/pipeline/merges.py [--rate 6500] [--seconds 120] [--rounds 2]
        [--configs before,vertical,now]

Per run it prints: CPU per event of chDB's merge threads (MergeMutate) and of its engine
pool (the inserts, and the sampled queries); rows written by merges per row inserted
(write amplification, from the parts still listed, active or not, at the end: chDB keeps
outdated parts for minutes); the parts alive,
sampled every 2 s (mean, max); and the median time of a logs-like query (newest 50 of a
project, deduplicated with LIMIT 1 BY) run at each sample, which reads every part alive.

Configurations: `before` = the settings before session 20 (horizontal merges below
131,072 rows, merge_selector_base 5), `vertical` = vertical merges, base 5, `now` = what
`ensure_schema` sets (clickhouse_schema.RAW_SETTINGS and MERGE_TUNING); `baseN` = now with
merge_selector_base = N; `noheuristic` = vertical with
merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0.

`--optimize`: one merge instead, the same data either way. 20 parts of 6,500 events
(merges stopped), then `OPTIMIZE TABLE events FINAL` into one part, for configurations
`horizontal` (the old settings), `vertical` (now) and `mergetree` (a plain MergeTree with
the old settings, which has no duplicates to look for): process CPU per row of the merge,
and the logs query's median over 20 runs on the merged part.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.pipeline.cpu import produce, thread_cpu
from bench.pipeline.ingest import event, fresh
from watchllm import core
from watchllm.events.pipeline import EventPipeline
from watchllm.events.schema import EVENTS_COLUMNS

OLD = ("vertical_merge_algorithm_min_rows_to_activate = 131072, "
       "vertical_merge_algorithm_min_columns_to_activate = 11")
LOGS = ("SELECT event_id, timestamp, model, latency_ms FROM events WHERE project_id = "
        "'proj_0' ORDER BY timestamp DESC LIMIT 1 BY event_id LIMIT 50")


def alter(config: str) -> str | None:
    if config == "before":
        return f"ALTER TABLE events MODIFY SETTING {OLD}, merge_selector_base = 5"
    if config == "vertical":
        return "ALTER TABLE events MODIFY SETTING merge_selector_base = 5"
    if config.startswith("base"):
        return f"ALTER TABLE events MODIFY SETTING merge_selector_base = {int(config[4:])}"
    if config == "noheuristic":
        return ("ALTER TABLE events MODIFY SETTING merge_selector_base = 5, "
                "merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0")
    if config == "now":
        return None
    raise SystemExit(f"unknown configuration {config!r}")


def comm(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


async def logs_query_s(a: Any) -> float:
    started = time.perf_counter()
    await a.query(LOGS)
    return time.perf_counter() - started


async def run(root: Path, config: str, rate: int, seconds: float, name: str) -> dict[str, float]:
    a = await fresh(f"chdb://{root / 'ch'}", name)
    if (sql := alter(config)) is not None:
        await a.command(sql)
    p = await EventPipeline(a, root / f"spool-{name}").start()
    parts: list[int] = []
    query_s: list[float] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(2)
            rows = await a.query("SELECT count() AS c FROM system.parts WHERE database = "
                                 "currentDatabase() AND table = 'events' AND active")
            parts.append(rows[0]["c"])
            query_s.append(await logs_query_s(a))

    sampler = asyncio.create_task(sample())
    before = thread_cpu()
    n = await produce(p.put, rate, seconds, name)
    sampler.cancel()
    await p.flush()
    after = thread_cpu()
    by: dict[str, float] = {}
    for tid, t in after.items():
        label = comm(tid)
        by[label] = by.get(label, 0.0) + t - before.get(tid, 0.0)
    merged = await a.query("SELECT sum(rows) AS r FROM system.parts WHERE database = "
                           "currentDatabase() AND table = 'events' AND level > 0")
    await p.close()
    await a.command(f"DROP DATABASE {name}")
    await a.close()
    return {"merge": by.get("MergeMutate", 0.0) / n * 1e6,
            "insert": by.get("ThreadPool", 0.0) / n * 1e6,
            "amplification": (merged[0]["r"] or 0) / n,
            "parts_mean": statistics.fmean(parts), "parts_max": max(parts),
            "logs_ms": statistics.median(query_s) * 1e3}


async def optimize(root: Path, config: str, name: str) -> tuple[float, float]:
    """CPU µs per row of one merge of 20 parts into one, and the logs query's median ms."""
    a = await fresh(f"chdb://{root / 'ch'}", name)
    if config in ("horizontal", "mergetree"):
        await a.command(f"ALTER TABLE events MODIFY SETTING {OLD}, merge_selector_base = 5")
    if config == "mergetree":
        create = (await a.query("SELECT create_table_query AS q FROM system.tables WHERE "
                                "database = currentDatabase() AND name = 'events'"))[0]["q"]
        await a.command("DROP TABLE events")
        await a.command(create.replace("ReplacingMergeTree", "MergeTree"))
    await a.command("SYSTEM STOP MERGES events")
    cols = list(EVENTS_COLUMNS)
    for part in range(20):
        rows = [event(part * 6500 + i, name) for i in range(6500)]
        await a.insert_rowbinary("events", [c for c, _ in cols],
                                 core.encode_rowbinary(cols, rows))
    await a.command("SYSTEM START MERGES events")
    started = time.process_time()
    await a.command("OPTIMIZE TABLE events FINAL")
    cpu = time.process_time() - started
    times = [await logs_query_s(a) for _ in range(20)]
    await a.command(f"DROP DATABASE {name}")
    await a.close()
    return cpu / (20 * 6500) * 1e6, statistics.median(times) * 1e3


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=6500)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default="before,vertical,now")
    ap.add_argument("--optimize", action="store_true")
    args = ap.parse_args()
    configs = args.configs.split(",")
    for c in configs:
        alter(c)
    root = Path(tempfile.mkdtemp(prefix="watchllm-merges-"))
    try:
        if args.optimize:
            print(f"$ {' '.join(sys.argv)}\n\n| config | round | merge CPU µs/row | logs query "
                  "median ms (one part) |\n| --- | ---: | ---: | ---: |", flush=True)
            for r in range(args.rounds):
                for c in ("horizontal", "vertical", "mergetree"):
                    per_row, ms = await optimize(root, c, f"o_{c}_{r}")
                    print(f"| {c} | {r + 1} | {per_row:.2f} | {ms:.1f} |", flush=True)
            return
        print(f"$ {' '.join(sys.argv)}\n")
        print("| config | round | merge µs/event | engine pool (inserts, sampled queries) "
              "µs/event | rows merged per row | parts alive mean / max | logs query median ms "
              "|\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
        for r in range(args.rounds):
            for c in configs:
                m = await run(root, c, args.rate, args.seconds, f"m_{c}_{r}")
                print(f"| {c} | {r + 1} | {m['merge']:.2f} | {m['insert']:.2f} | "
                      f"{m['amplification']:.2f} | {m['parts_mean']:.1f} / {m['parts_max']} | "
                      f"{m['logs_ms']:.1f} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
