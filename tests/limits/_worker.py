"""One 'gateway process' for the cross-process exactness test: prints how many it admitted.

    python -m tests.limits._worker PROJECT ATTEMPTS RPM NOW_MS START_AT
"""

from __future__ import annotations

import asyncio
import sys
import time

from watchllm.errors import RateLimitError
from watchllm.limits import LimitsService
from watchllm.settings import Settings

from .conftest import RedisCounters, redis_client


async def main(project: str, attempts: int, rpm: int, now_ms: int, start_at: float) -> int:
    counters = RedisCounters(redis_client())
    service = LimitsService(counters, Settings(default_rpm=rpm), clock=lambda: now_ms / 1000)
    await counters.client.ping()  # connect before the start line

    async def one(i: int) -> bool:
        try:
            await service.admit(project, "k", 10)
        except RateLimitError:
            return False
        return True

    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(*(one(i) for i in range(attempts)))
    await counters.close()
    return sum(results)


if __name__ == "__main__":
    p, a, r, n, s = sys.argv[1:6]
    print(asyncio.run(main(p, int(a), int(r), int(n), float(s))))
