"""Redis-only behaviour: a small pool makes callers wait (not fail); a dead Redis degrades
to in-process stand-ins (fail open) or raises (fail closed), and recovers."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.conftest import REDIS_URL
from watchllm.env.base import CountersUnavailable
from watchllm.env.selfhosted.redis import RedisCounters, RedisKeyValue, connect
from watchllm.errors import ServiceUnavailableError
from watchllm.limits.ops import QUOTA, Op

DEAD = "redis://127.0.0.1:1/0"


async def test_exhausted_pool_waits_instead_of_failing() -> None:
    c = RedisCounters(connect(REDIS_URL, max_connections=2), prefix="test:pool:")
    await c.client.delete("test:pool:n")
    await asyncio.gather(*(c.incr("n", 1, 60) for _ in range(300)))
    assert await c.get("n") == 300.0
    assert not c.degraded
    await c.client.delete("test:pool:n")
    await c.close()


async def test_dead_redis_fail_open_serves_from_process_and_says_so() -> None:
    kv = RedisKeyValue(connect(DEAD, timeout_s=0.2), fail_mode="open")
    await kv.set("a", b"1", 60)  # no exception: kept in process
    assert await kv.get("a") == b"1"
    assert kv.degraded and kv.breaker.degraded_ops >= 2
    with pytest.raises(ServiceUnavailableError):
        await kv.ping()  # /ready names Redis as failing
    counters = RedisCounters(connect(DEAD, timeout_s=0.2), fail_mode="open")
    assert await counters.incr("x", 2, 60) == 2.0
    with pytest.raises(CountersUnavailable):  # limits decide their own fail mode
        await counters.apply([Op(QUOTA, "q", 3, 2**41)])
    await kv.close()
    await counters.close()


async def test_dead_redis_fail_closed_raises() -> None:
    kv = RedisKeyValue(connect(DEAD, timeout_s=0.2), fail_mode="closed")
    with pytest.raises(ServiceUnavailableError):
        await kv.get("a")
    await kv.close()


async def test_recovers_when_redis_comes_back() -> None:
    kv = RedisKeyValue(connect(REDIS_URL), prefix="test:recover:")
    kv.breaker.trip()  # as if the last call had failed
    assert kv.degraded
    kv.breaker.retry_at = 0  # the probe is due
    await kv.set("k", b"v", 60)
    assert not kv.degraded
    assert await kv.client.get("test:recover:k") == b"v"
    await kv.delete_prefix("")
    await kv.close()
