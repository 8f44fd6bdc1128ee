"""Limits and metrics on the hot path: µs per request and Redis round trips per request.

    .venv/bin/python bench/limits/run.py [--quick]

Measured in the same run, each against a baseline:
  * admit+settle in-process (MemoryCounters) with a typical plan, vs an unlimited caller;
  * admit+settle on Redis, sequential (latency) and 64 concurrent (throughput), vs a bare
    PING round trip; round trips per request from Redis `INFO commandstats` deltas;
  * metrics.record_request, single process and in multiprocess mode (mmap files).
docs/limits.md records a run with this exact command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from watchllm.env.embedded.memory import MemoryCounters
from watchllm.limits import Limits, LimitsService, Scope
from watchllm.limits.redis import RedisLimiter
from watchllm.settings import Settings

PLAN = Limits(project=Scope(rpm=10**7, tpm=10**9, max_concurrent=10**6),
              key=Scope(rpm=10**7, tpm=10**9), budget_usd=10**6)


class RedisCounters:
    def __init__(self, client: Any) -> None:
        self.apply = RedisLimiter(client).apply


async def per_request_us(svc: LimitsService, n: int, limits: Limits | None) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        a = await svc.admit("bench", f"k{i & 7}", 120, limits)
        headers = svc.headers(a)
        await svc.settle(a, 150, 0.0004)
    assert headers is not None
    return (time.perf_counter() - t0) / n * 1e6


async def concurrent_rps(svc: LimitsService, n: int, width: int = 64) -> tuple[float, float]:
    """(requests/s, gateway CPU µs per request) with `width` requests in flight."""
    async def worker(k: int) -> None:
        for _ in range(n // width):
            a = await svc.admit("bench", f"k{k & 7}", 120, PLAN)
            await svc.settle(a, 150, 0.0004)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(k) for k in range(width)))
    done = n // width * width
    return done / (time.perf_counter() - t0), (time.process_time() - c0) / done * 1e6


async def concurrent_ping_cpu(client: Any, n: int, width: int = 64) -> float:
    async def worker() -> None:
        for _ in range(n // width):
            await client.ping()

    c0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(width)))
    return (time.process_time() - c0) / (n // width * width) * 1e6


async def commandstats(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def redis_part(n: int) -> list[tuple[str, str]]:
    import redis.asyncio as redis

    client = redis.Redis(db=14)
    try:
        await client.ping()
    except Exception as exc:
        return [("Redis", f"skipped: {exc}")]
    await client.flushdb()
    await client.config_resetstat()
    svc = LimitsService(RedisCounters(client), Settings())  # type: ignore[arg-type]
    await per_request_us(svc, 50, PLAN)  # warm: script loaded, connection open
    t0 = time.perf_counter()
    for _ in range(n):
        await client.ping()
    ping_us = (time.perf_counter() - t0) / n * 1e6
    before = await commandstats(client)
    seq_us = await per_request_us(svc, n, PLAN)
    after = await commandstats(client)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = {k: v for k, v in calls.items() if v > 0 and k != "info"}
    admit_only = LimitsService(RedisCounters(client), Settings())  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i in range(n):
        await admit_only.admit("bench2", f"k{i & 7}", 120,
                               Limits(project=Scope(rpm=10**7), key=Scope(rpm=10**7)))
    admit_us = (time.perf_counter() - t0) / n * 1e6
    rps, cpu_us = await concurrent_rps(svc, n * 2)
    ping_cpu_us = await concurrent_ping_cpu(client, n * 2)
    server = await client.info("commandstats")
    script_us = server.get("cmdstat_evalsha", {}).get("usec_per_call", 0)
    await client.aclose()
    per_req = {k: round(v / n, 3) for k, v in calls.items()}
    return [
        ("Redis PING round trip (baseline)", f"{ping_us:.0f} µs"),
        ("Redis admit only, rpm key+project (1 EVALSHA)", f"{admit_us:.0f} µs"),
        ("Redis admit+headers+settle, full plan (sequential)", f"{seq_us:.0f} µs"),
        ("Redis admit+settle, 64 concurrent, one connection pool", f"{rps:,.0f} req/s"),
        ("  gateway CPU per request in that run (admit+settle)", f"{cpu_us:.0f} µs"),
        ("  baseline: gateway CPU per PING, 64 concurrent", f"{ping_cpu_us:.0f} µs"),
        ("  Redis server time per EVALSHA (commandstats)", f"{script_us} µs"),
        ("Redis commands per request (INFO commandstats)", f"{per_req}"),
    ]


METRICS_CODE = """
import asyncio, time
from watchllm import metrics

async def main(n):
    m = metrics._m
    direct = (m.requests.labels("chat/completions", "gpt-4o", "200"),
              m.latency.labels("chat/completions"), m.ttft.labels("chat/completions"),
              m.tokens.labels("gpt-4o", "prompt"), m.tokens.labels("gpt-4o", "completion"),
              m.cost.labels("gpt-4o"))
    def naive():  # baseline: straight into prometheus-client, children already resolved
        direct[0].inc(); direct[1].observe(0.12); direct[2].observe(0.03)
        direct[3].inc(10); direct[4].inc(5); direct[5].inc(0.001)
    def ours():
        metrics.record_request("chat/completions", "gpt-4o", 200, 0.12, 0.03, 10, 5, 0.001)
    out = []
    for fn in (naive, ours):
        for _ in range(1000):
            fn()
        t0 = time.perf_counter()
        for i in range(n):
            fn()
            if i % 1000 == 0:
                await asyncio.sleep(0)  # let the once-a-second flush run, as in a server
        out.append((time.perf_counter() - t0) / n * 1e6)
    print(*out)

asyncio.run(main({n}))
"""


def metrics_part(n: int) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for label, extra in (("single process", {}),
                             ("multiprocess (PROMETHEUS_MULTIPROC_DIR)",
                              {"PROMETHEUS_MULTIPROC_DIR": directory})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            out = subprocess.run([sys.executable, "-c", METRICS_CODE.format(n=n)], check=True,
                                 capture_output=True, text=True, env={**env, **extra}).stdout
            naive, ours = (float(x) for x in out.split())
            rows.append((f"metrics per request, prometheus-client direct (baseline), {label}",
                          f"{naive:.1f} µs"))
            rows.append((f"metrics.record_request, {label}", f"{ours:.1f} µs"))
    return rows


async def main(quick: bool) -> None:
    n = 2_000 if quick else 20_000
    memory = LimitsService(MemoryCounters(), Settings())
    rows = [
        ("in-process admit+headers+settle, unlimited caller (baseline)",
         f"{await per_request_us(memory, n, Limits()):.1f} µs"),
        ("in-process admit+headers+settle, full plan (2 rpm, 2 tpm, conc, budget)",
         f"{await per_request_us(memory, n, PLAN):.1f} µs"),
        ("in-process admit+headers+settle, resolved from defaults (key rpm+tpm)",
         f"{await per_request_us(LimitsService(MemoryCounters(), Settings(default_rpm=10**7, default_tpm=10**9)), n, None):.1f} µs"),  # noqa: E501
    ]
    rows += await redis_part(n // 4)
    rows += metrics_part(n * 5)
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
