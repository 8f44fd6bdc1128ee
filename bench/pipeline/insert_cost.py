"""What one insert into the embedded engine costs, fixed and per row: process CPU per
statement (chDB's threads included) for blocks of 10 and of 6,500 gateway events, into the
real schema with and without the `usage_hourly` view, and of a `SELECT 1` for scale;
merges stopped, a deduplication token per insert, as the pipeline sends them. Not a test.

    .venv/bin/python bench/pipeline/insert_cost.py [--rounds 2] [--inserts 20]

A 10-row insert is almost all fixed cost: what an insert costs whatever its size, which
the pipeline pays once per `WATCHLLM_EVENTS_FLUSH_MS` while events arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.pipeline.ingest import event, fresh
from watchllm import core
from watchllm.events.schema import EVENTS_COLUMNS


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--inserts", type=int, default=20)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="watchllm-insert-cost-"))
    url = f"chdb://{root / 'ch'}"
    cols = list(EVENTS_COLUMNS)
    names = [c for c, _ in cols]
    blocks = {size: [core.encode_rowbinary(cols, [event(b * size + i, f"s{size}")
                                                  for i in range(size)])
                     for b in range(args.inserts)] for size in (10, 6500)}
    print(f"$ {' '.join(sys.argv)}\n\n| schema | round | SELECT 1 ms | 10-row insert ms "
          "| 6,500-row insert ms | per row beyond the fixed cost µs |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    try:
        for r in range(args.rounds):
            for view in (True, False):
                a = await fresh(url, f"c_{uuid.uuid4().hex[:8]}")
                if not view:
                    await a.command("DROP VIEW usage_hourly_mv")
                await a.command("SYSTEM STOP MERGES")
                await a.query("SELECT 1")
                started = time.process_time()
                for _ in range(args.inserts):
                    await a.query("SELECT 1")
                select_ms = (time.process_time() - started) / args.inserts * 1e3
                ms = {}
                for size, data in blocks.items():
                    started = time.process_time()
                    for b in data:
                        await a.insert_rowbinary("events", names, b, uuid.uuid4().hex)
                    ms[size] = (time.process_time() - started) / args.inserts * 1e3
                per_row = (ms[6500] - ms[10]) / (6500 - 10) * 1e3
                print(f"| {'events + view' if view else 'events alone'} | {r + 1} | "
                      f"{select_ms:.2f} | {ms[10]:.2f} | {ms[6500]:.2f} | {per_row:.2f} |",
                      flush=True)
                await a.command(f"DROP DATABASE {a.database}")
                await a.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
