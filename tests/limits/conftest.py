"""Counters backends for the limits tests: in-process, and Redis when one answers."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from watchllm.env.embedded.memory import MemoryCounters
from watchllm.limits.redis import RedisLimiter

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13


def redis_up() -> bool:
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.3).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


def redis_client(**kw: Any) -> Any:
    import redis.asyncio as redis

    return redis.Redis(host=kw.pop("host", REDIS_HOST), port=kw.pop("port", REDIS_PORT),
                       db=REDIS_DB, socket_connect_timeout=0.5, socket_timeout=2, **kw)


def lean_client() -> Any:
    """The hot path's client: `RedisLimiter` sends through its `submit`, no task."""
    from watchllm.env.selfhosted.resp import LeanRedis

    return LeanRedis(f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}", size=2)


def client_of(kind: str) -> Any:
    return lean_client() if kind == "lean" else redis_client()


async def close_client(client: Any) -> None:
    await (client.aclose() if hasattr(client, "aclose") else client.close())


# Both Redis clients the limiter is given: redis-py (tools) and the lean one (hot path).
REDIS_KINDS = [pytest.param(k, marks=needs_redis) for k in ("redis", "lean")]


class RedisCounters:
    """The smallest Redis `Counters` for these tests: `apply` is RedisLimiter's."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.apply = RedisLimiter(client).apply

    async def incr(self, key: str, amount: float, ttl_s: float) -> float:
        raise NotImplementedError

    async def get(self, key: str) -> float:
        raise NotImplementedError

    async def close(self) -> None:
        await close_client(self.client)


@pytest.fixture(params=["memory", *REDIS_KINDS])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    c = RedisCounters(client_of(request.param))
    yield c
    await c.close()


@pytest.fixture
def project() -> str:
    """A fresh project id per test: Redis state of other tests never interferes."""
    return "p" + secrets.token_hex(6)
