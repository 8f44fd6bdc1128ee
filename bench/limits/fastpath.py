"""The in-process limits work of one proxied request, call by call, in a warm loop.

    .venv/bin/python bench/limits/fastpath.py [N] [--redis]

The calls `routes/proxy.py` makes for a rates-only caller (rpm + tpm) admitted in
process: `limits_now`, the prompt-token estimate, `admit_now`, `headers`, `settle_now`.
`--redis`: the same on Redis (db 10), admitted from this worker's prefetched capacity
(limits/prefetch.py); the loop yields to the event loop every 64 requests, so grants land.
Printed: µs per request for the whole sequence, then for each call alone (best of 3).
A served worker pays 2-4x these: its caches are colder (docs/limits.md, "Session 8").
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from watchllm import core
from watchllm.env.embedded.memory import MemoryCounters
from watchllm.events import usage as usage_mod
from watchllm.limits import LimitsService
from watchllm.settings import Settings

DATA = orjson.loads(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}')


async def main(n: int, redis: bool) -> None:
    settings = Settings(default_rpm=10**8, default_tpm=10**9)
    if redis:
        import redis.asyncio as redis_py

        from watchllm.env.selfhosted.redis import RedisCounters
        from watchllm.env.selfhosted.resp import LeanRedis

        counters: Any = RedisCounters(redis_py.Redis(db=10), owns_client=False,
                                      fast=LeanRedis("redis://127.0.0.1/10"))
    else:
        counters = MemoryCounters()
    svc = LimitsService(counters, settings)
    await svc.admit("p", "k", 5, await svc.limits_for("p", "k"))  # builds the template
    limits = svc.limits_now("p", "k")
    assert limits is not None
    if redis:  # let the first prefetch land
        for _ in range(100):
            await asyncio.sleep(0.001)
            if svc.admit_now("p", "k", 5, limits) is not None:
                break

    missed = [0]

    def request() -> None:
        estimate = usage_mod.chat_prompt_tokens(DATA)
        admission = svc.admit_now("p", "k", estimate, limits)
        if admission is None:  # Redis: the prefetch ran out before its refill landed
            missed[0] += 1
            return
        svc.headers(admission)
        svc.settle_now(admission, 30)

    for _ in range(100):  # Redis: warm up until the prefetch is large enough
        await _timed(request, 10_000)
    adm = svc.admit_now("p", "k", 8, limits)
    assert adm is not None
    missed[0] = 0
    steps = {
        "whole request": request,
        "limits_now": lambda: svc.limits_now("p", "k"),
        "estimate": lambda: usage_mod.chat_prompt_tokens(DATA),
        "admit_now": lambda: svc.admit_now("p", "k", 8, limits),
        "headers": lambda: svc.headers(adm),
        # An admission settles once: settle_now is timed with a fresh admit_now each.
        "admit+settle_now": lambda: svc.settle_now(svc.admit_now("p", "k", 8, limits), 30),
    }
    for name, fn in steps.items():
        best = min([await _timed(fn, n) for _ in range(3)])
        print(f"{name:16} {best / n * 1e6:6.2f} µs")
    print(f"requests not admitted at once: {missed[0]}")
    print(f"(core: {core.BACKEND}; counters: {'redis, prefetched' if redis else 'in process'})")
    await svc.close()


async def _timed(fn: Any, n: int) -> float:
    """CPU seconds for n calls, yielding to the loop every 64 (the loop's own share
    included: on Redis it sends and applies the grants)."""
    start = time.process_time()
    for i in range(n):
        fn()
        if not i & 63:
            await asyncio.sleep(0)
    return time.process_time() - start


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(int(args[0]) if args else 200_000, "--redis" in sys.argv))
