"""A Redis that drops the connection or stops answering mid-flight: every request of the
tick gets `CountersUnavailable` (the service then fails open or closed as configured),
on the hot path's send without a coroutine too. A stand-in server answers the first
script call and misbehaves on the second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from watchllm.env.base import CountersUnavailable
from watchllm.env.selfhosted.resp import LeanRedis
from watchllm.limits.ops import RATE, Op
from watchllm.limits.redis import RedisLimiter

NOW = 1_790_000_000_000
OPS = [Op(RATE, "wl:{p}:rpm", 10, 60_000)]
REPLY = f"1 -1 {NOW} 9 6000 0".encode()  # allowed, none denied, now, (remaining reset retry)


@pytest.mark.parametrize("then", ["close", "hang", "readonly", "garbage"])
async def test_redis_lost_after_the_send_fails_the_whole_tick(then: str) -> None:
    """Lost, silent, or answering an error (a replica after failover): unavailable, so
    the configured fail-open/closed choice applies. A reply that is not the script's:
    every caller gets the error rather than waiting forever."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"$%d\r\n%s\r\n" % (len(REPLY), REPLY))
        await writer.drain()
        await reader.read(65536)  # the second tick's script call
        if then == "close":
            writer.close()
        elif then == "readonly":
            writer.write(b"-READONLY You can't write against a read only replica.\r\n")
        elif then == "garbage":
            writer.write(b"$3\r\nabc\r\n")
        if then != "close":
            await writer.drain()
            await asyncio.sleep(10)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LeanRedis(f"redis://127.0.0.1:{port}/0", size=1)
    submitted: list[Any] = []
    submit = client.submit

    def spy(*args: Any) -> Any:
        submitted.append(sent := submit(*args))
        return sent

    client.submit = spy  # type: ignore[method-assign]
    limiter = RedisLimiter(client, timeout_s=0.3)
    assert (await limiter.apply(OPS, NOW)).results[0].remaining == 9  # connects
    started = time.monotonic()
    got = await asyncio.gather(*(limiter.apply(OPS, NOW) for _ in range(3)),
                               return_exceptions=True)
    expected = ValueError if then == "garbage" else CountersUnavailable
    assert all(isinstance(g, expected) for g in got), got
    assert time.monotonic() - started < 2
    assert submitted[-1] is not None  # the second tick went out without a task
    await client.close()
    server.close()
