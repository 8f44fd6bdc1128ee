"""The lean Redis client against a real Redis: replies, pipelining, errors, reconnects."""

from __future__ import annotations

import asyncio
import os

import pytest

from watchllm.env.selfhosted.resp import LeanRedis, RespError
from watchllm.testing.servers import free_port

URL = os.environ.get("WATCHLLM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def test_replies_of_every_type_and_db_selection() -> None:
    r = LeanRedis(URL, size=2)
    try:
        assert await r.execute("SET", "wl:resp:a", "1") == b"OK"
        assert await r.execute("INCRBY", "wl:resp:a", 41) == 42
        assert await r.execute("GET", "wl:resp:a") == b"42"
        assert await r.execute("GET", "wl:resp:missing") is None
        await r.execute("DEL", "wl:resp:l")
        await r.execute("RPUSH", "wl:resp:l", "x", b"\x00\xffbin")
        assert await r.execute("LRANGE", "wl:resp:l", 0, -1) == [b"x", b"\x00\xffbin"]
        db = URL.rsplit("/", 1)[1]
        info = await r.execute("CLIENT", "INFO")
        assert f"db={db}".encode() in info
    finally:
        await r.close()


async def test_pipelined_concurrent_commands_get_their_own_replies() -> None:
    r = LeanRedis(URL, size=3)
    try:
        keys = [f"wl:resp:k{i}" for i in range(300)]
        await asyncio.gather(*(r.execute("SET", k, k) for k in keys))
        values = await asyncio.gather(*(r.execute("GET", k) for k in keys))
        assert values == [k.encode() for k in keys]
    finally:
        await r.close()


async def test_errors_are_resp_errors_and_the_connection_survives() -> None:
    r = LeanRedis(URL, size=1)
    try:
        with pytest.raises(RespError, match="NOSCRIPT"):
            await r.execute("EVALSHA", "0" * 40, 0)
        assert await r.execute("PING") == b"PONG"
    finally:
        await r.close()


async def test_unreachable_server_and_reconnect_after_the_server_drops_us() -> None:
    down = LeanRedis(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.5)
    with pytest.raises(ConnectionError):
        await down.execute("PING")
    r = LeanRedis(URL, size=1)
    try:
        name = f"wl-resp-{os.getpid()}"
        await r.execute("CLIENT", "SETNAME", name)
        killer = LeanRedis(URL, size=1)
        await killer.execute("CLIENT", "KILL", "ID", await r.execute("CLIENT", "ID"))
        await killer.close()
        await asyncio.sleep(0.05)
        assert await r.execute("PING") == b"PONG"  # a fresh connection
    finally:
        await r.close()


async def test_a_slow_reply_times_out_and_never_answers_another_caller() -> None:
    r = LeanRedis(URL, size=1, timeout_s=0.2)
    try:
        await r.execute("SET", "wl:resp:t", "mine")
        slow = asyncio.ensure_future(r.execute("BLPOP", "wl:resp:never", 1))  # blocks 1 s
        with pytest.raises(TimeoutError):
            await slow
        await asyncio.sleep(1.0)  # the blocked command's late reply would arrive now
        assert await r.execute("GET", "wl:resp:t") == b"mine"
    finally:
        await r.close()


async def test_a_shorter_caller_timeout_fails_only_that_caller() -> None:
    """`submit` with a timeout below the client's (the limits timeout): that caller gets
    TimeoutError, the shared connection stays, and its late reply answers nobody else."""
    r = LeanRedis(URL, size=1, timeout_s=2.0)
    try:
        await r.execute("SET", "wl:resp:s", "mine")
        conn = r._conns[0]
        slow = r.submit(0.1, "BLPOP", "wl:resp:never", "0.5")  # blocks 0.5 s
        assert slow is not None
        with pytest.raises(TimeoutError):
            await slow
        assert await r.execute("GET", "wl:resp:s") == b"mine"  # after the late reply
        assert r._conns[0] is conn and not conn.closed
    finally:
        await r.close()


async def test_commands_of_one_tick_share_a_write() -> None:
    """Commands issued together go out in one write per connection, so Redis reads them in
    a handful of reads instead of one read per command (counted by the server itself)."""
    r = LeanRedis(URL, size=4)
    try:
        await r.execute("PING")  # connect first: connection set-up is not what is measured

        async def reads() -> int:
            info = (await r.execute("INFO", "stats")).decode()
            return int(info.split("total_reads_processed:")[1].split()[0])

        before = await reads()
        values = await asyncio.gather(*(r.execute("ECHO", str(i)) for i in range(400)))
        after = await reads()
        assert values == [str(i).encode() for i in range(400)]
        # 400 commands + the INFO: a few reads (other clients of this Redis add a few more).
        assert after - before < 60, after - before
    finally:
        await r.close()
