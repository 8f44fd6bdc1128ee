"""CPU per event of the embedded pipeline at a gateway-like rate (not saturation): the
process's CPU time (all threads, chDB's engine included) per event, minus the producer
loop alone, split by thread from /proc. Configurations run one after another in one
process (one chDB engine), interleaved over rounds. Not a test.

    .venv/bin/python bench/pipeline/cpu.py [--rate 3000] [--seconds 6] [--rounds 2]

Configurations: `raw` = the pipeline with plain RowBinary inserts (the insert route before),
`route` = the INSERT ... SELECT FROM file() route, as the gateway runs it (flush 1000 ms),
`routeNs` (e.g. `route5s`) the same with WATCHLLM_EVENTS_FLUSH_MS=N*1000 (N x bigger inserts
at this rate);
`--configs tree` runs whatever this source tree does (for a copy of an older commit:
`git archive <commit> | tar -x -C /tmp/old`, copy watchllm/_core*.so and this file there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.pipeline.ingest import event, fresh
from watchllm import core
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.pipeline import EventPipeline

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def thread_names(p: EventPipeline | None, sink: ClickHouseAnalytics | None) -> dict[int, str]:
    names = {threading.get_native_id(): "event loop (producer + shipper)"}
    for t in threading.enumerate():
        if t.native_id and t.name.startswith("watchllm-spool"):
            names[t.native_id] = "writer (JSON + spool)"
    pools: list[tuple[Any, str]] = []
    if p is not None:
        pools.append((p._helper, "helper (decode, route, encode)"))
    if sink is not None:
        pools.append((sink._writer, "insert thread (client + chDB parse)"))
    for pool, label in pools:
        names[pool.submit(threading.get_native_id).result()] = label
    return names


async def produce(put: Callable[[dict[str, Any]], None], rate: int, seconds: float,
                  run: str) -> int:
    """Events at `rate`/s in 1 ms steps, like requests arriving."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        while n < due:
            put(event(n, run))
            n += 1
        await asyncio.sleep(0.001)
    return n


async def measure(url: str, config: str, rate: int, seconds: float, spool: Path,
                  run: str) -> tuple[float, int, dict[str, float]]:
    sink = None
    if config == "raw":
        sink = ClickHouseAnalytics(url, "bench_cpu", schema={})
    elif config != "none":  # "route", or "tree" (whatever this source tree does)
        sink = ClickHouseAnalytics(url, "bench_cpu")
    p = None
    if sink is not None:
        await sink.query("SELECT 1")
        flush_s = config.removeprefix("route").removesuffix("s")
        flush = {"flush_ms": float(flush_s) * 1000} if flush_s.isdigit() else {}
        p = await EventPipeline(sink, spool, **flush).start()  # type: ignore[arg-type]
    names = thread_names(p, sink)
    before, c0 = thread_cpu(), time.process_time()
    n = await produce(p.put if p else (lambda e: None), rate, seconds, run)
    if p is not None:
        await p.flush()
    cpu = time.process_time() - c0
    after = thread_cpu()
    split: dict[str, float] = {}
    for tid, t in after.items():
        label = names.get(tid, "chDB engine threads")
        split[label] = split.get(label, 0.0) + t - before.get(tid, 0.0)
    if p is not None:
        await p.close()
    if sink is not None:
        await sink.close()
    return cpu, n, split


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default="raw,route")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-bench-"))
    url = f"chdb://{tmp / 'ch'}"
    print(f"$ {' '.join(sys.argv)}   (core backend: {core.BACKEND})")
    configs = ["none", *args.configs.split(",")]
    try:
        await fresh(url, "bench_cpu")
        per: dict[str, list[float]] = {c: [] for c in configs}
        splits: dict[str, dict[str, float]] = {}
        for r in range(args.rounds):
            for c in configs:
                cpu, n, split = await measure(url, c, args.rate, args.seconds,
                                              tmp / f"spool-{c}-{r}", f"{c}{r}")
                per[c].append(cpu / n * 1e6)
                splits[c] = {k: v / n * 1e6 for k, v in split.items()}
        base = min(per["none"])
        print(f"\n{args.rate:,} events/s for {args.seconds:g} s, best of {args.rounds}; "
              f"producer loop alone {base:.1f} µs/event\n")
        print("| config | pipeline CPU µs/event | by thread (last round) |\n| --- | ---: | --- |")
        for c in configs[1:]:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in
                              sorted(splits[c].items(), key=lambda kv: -kv[1]) if v >= 0.05)
            print(f"| {c} | {min(per[c]) - base:.1f} | {parts} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
