"""Counters backends for the limits tests: in-process, and Redis when one answers."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["redis", "lean"])
async def redis_counters(private_redis: int,
                         request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """On a private server, through redis-py and through the hot path's lean client;
    `.admin` is a redis-py client to the same server (INFO and the like)."""
    import redis.asyncio as redis

    from watchllm.env.selfhosted.resp import LeanRedis

    admin = redis.Redis(port=private_redis)
    client = admin if request.param == "redis" else LeanRedis(
        f"redis://127.0.0.1:{private_redis}/0", size=2)
    counters = RedisCounters(client)
    counters.admin = admin  # type: ignore[attr-defined]
    yield counters
    await counters.close()
    if client is not admin:
        await admin.aclose()
