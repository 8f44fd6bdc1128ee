"""Redis client cost on the hot path: CPU per EVALSHA, redis-py vs the lean client.

    .venv/bin/python bench/load/redis_client.py [--n 20000] [--concurrency 32]

Both run the same tiny script against the local Redis (db 12) from one process pinned to
core 0 with uvloop, interleaved twice; printed: CPU time per command (user + system) and
commands/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis.asyncio as aioredis
import uvloop
from http_client import drive

from watchllm.env.selfhosted.resp import LeanRedis

URL = "redis://127.0.0.1:6379/12"
SCRIPT = "return redis.call('INCR', KEYS[1])"


async def redis_py(n: int, conc: int) -> tuple[float, float]:
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        URL, max_connections=64))
    sha = await client.script_load(SCRIPT)
    try:
        return await drive(lambda: client.evalsha(sha, 1, "wl:bench"), n, conc, warm=50)
    finally:
        await client.aclose()


async def lean(n: int, conc: int) -> tuple[float, float]:
    client = LeanRedis(URL)
    sha = await client.execute("SCRIPT", "LOAD", SCRIPT)
    try:
        return await drive(lambda: client.execute("EVALSHA", sha, 1, "wl:bench"), n, conc, warm=50)
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    os.sched_setaffinity(0, {0})
    uvloop.install()
    print("| client | µs CPU / EVALSHA | commands/s |\n| --- | ---: | ---: |")
    for _ in range(2):
        for name, fn in (("redis-py (asyncio, hiredis)", redis_py), ("lean (resp.py)", lean)):
            cpu, rate = asyncio.run(fn(args.n, args.concurrency))
            print(f"| {name} | {cpu:.1f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
