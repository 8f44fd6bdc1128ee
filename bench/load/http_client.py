"""Upstream HTTP client cost: CPU per request of aiohttp vs the lean httptools client.

    .venv/bin/python bench/load/http_client.py [--n 20000] [--concurrency 32]

Both clients POST a chat request to the fixed-answer mock upstream (pinned to core 1) from
this process (pinned to core 0) with uvloop, interleaved twice; CPU time of this process
per request (user + system, so the socket syscalls count) and requests/s are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import uvloop

from watchllm.env.http_lean import LeanHttpClient
from watchllm.testing.servers import start_mock_upstream

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def drive(one: Callable[[], Awaitable[object]], n: int, conc: int,
                warm: int = 20) -> tuple[float, float]:
    """(µs CPU per call, calls/s) of `n` calls from `conc` concurrent tasks."""
    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(warm) for _ in range(conc)))  # warm the pool
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
    return (time.process_time() - cpu) / n * 1e6, n / (time.perf_counter() - wall)


async def with_aiohttp(url: str, n: int, conc: int) -> tuple[float, float]:
    skip = {"User-Agent", "Accept-Encoding", "Content-Type"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     skip_auto_headers=skip) as session:
        async def one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as r:
                await r.read()

        return await drive(one, n, conc)


async def with_lean(url: str, n: int, conc: int) -> tuple[float, float]:
    client = LeanHttpClient(256)

    async def one() -> None:
        r = await client.request("POST", url, HEADERS, BODY, connect_timeout=5, read_timeout=30)
        if r.status != 200 or not await r.read():
            raise RuntimeError("bad answer")

    try:
        return await drive(one, n, conc)
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    upstream = start_mock_upstream(Path(tempfile.mkdtemp()), fixed=True, cpu=1)
    os.sched_setaffinity(0, {0})
    uvloop.install()
    url = upstream.url + "/v1/chat/completions"
    try:
        print("| client | µs CPU / request | requests/s |\n| --- | ---: | ---: |")
        for _ in range(2):
            for name, fn in (("aiohttp", with_aiohttp), ("lean (httptools)", with_lean)):
                cpu, rps = asyncio.run(fn(url, args.n, args.concurrency))
                print(f"| {name} | {cpu:.1f} | {rps:,.0f} |")
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
