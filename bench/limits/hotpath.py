"""The limits work of one proxied request, as the proxy route does it, in CPU µs.

    .venv/bin/python bench/limits/hotpath.py [N] [--width 32] [--rounds 5] [--uvloop]

Per request: `limits_for`, the prompt-token estimate, `admit`, `headers`, `settle` (the
deferred-delta timer included), with `width` requests in flight. Backends: in-process
(MemoryCounters) and Redis db 10 through the self-hosted adapter and its lean client.
Each round runs every backend once, interleaved, against a baseline that does the same
loop with an unlimited caller; printed: the median and range of CPU µs per request.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm import core
from watchllm.env.embedded.memory import MemoryCounters
from watchllm.limits import LimitsService
from watchllm.settings import Settings

RAW = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}'


async def run(svc: LimitsService, n: int, width: int) -> float:
    async def worker(k: int) -> None:
        for _ in range(n // width):
            limits = await svc.limits_for("bench", f"k{k & 7}")
            adm = None
            if not limits.unlimited:
                estimate = core.count_chat_tokens(RAW)
                adm = await svc.admit("bench", f"k{k & 7}", estimate, limits)
                headers = svc.headers(adm)
                assert headers
            await asyncio.sleep(0)  # the provider call
            if adm is not None:
                await svc.settle(adm, 30, 0.0001)

    c0 = time.process_time()
    await asyncio.gather(*(worker(k) for k in range(width)))
    return (time.process_time() - c0) / (n // width * width) * 1e6


async def redis_service(settings: Settings) -> tuple[LimitsService, Any]:
    import redis.asyncio as redis

    from watchllm.env.selfhosted.redis import RedisCounters
    from watchllm.env.selfhosted.resp import LeanRedis

    client = redis.Redis(db=10)
    await client.flushdb()
    counters = RedisCounters(client, owns_client=False, fast=LeanRedis("redis://127.0.0.1/10"))
    return LimitsService(counters, settings), client  # type: ignore[arg-type]


async def main(n: int, width: int, rounds: int) -> None:
    limited = Settings(default_rpm=10**8, default_tpm=10**9)
    services = {
        "unlimited (baseline)": LimitsService(MemoryCounters(), Settings()),
        "in-process rpm+tpm": LimitsService(MemoryCounters(), limited),
    }
    client = None
    try:
        services["redis rpm+tpm"], client = await redis_service(limited)
    except Exception as exc:
        print(f"redis skipped: {exc}")
    for svc in services.values():
        await run(svc, 2000, width)  # warm: caches, script loaded, connections open
    results: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(rounds):
        for name, svc in services.items():
            results[name].append(await run(svc, n, width))
    for name, values in results.items():
        print(f"{name:24} {statistics.median(values):6.1f} µs  "
              f"({min(values):.1f}-{max(values):.1f})")
    for svc in services.values():
        await svc.close()
    if client is not None:
        await client.aclose()


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("n", type=int, nargs="?", default=20000)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--uvloop", action="store_true")
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.n, args.width, args.rounds))
