"""The lean client's push mode (`_Response.pipe`): each read's body handed to a sink in the
read's own callback. The proxy streams through it under granian (`proxy.streaming`), so
it must keep every promise `iter_chunks` keeps: every byte in order, the end reported
once, the read timeout per read, a broken upstream reported, and the upstream aborted
when the consumer fails or goes away — and a connection that ended well reused.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.contract.test_http_client import SSE_HEAD, lean_serving, read_request, respond
from watchllm.env.http_lean import LeanHttpClient


async def stream(client: LeanHttpClient, url: str, read_timeout: float = 5) -> Any:
    return await client.request("POST", url, {}, b"{}", connect_timeout=2,
                                read_timeout=read_timeout)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def test_each_read_reaches_the_sink_as_it_arrives_and_the_connection_is_reused() -> None:
    step = asyncio.Event()
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(SSE_HEAD)
            for i in range(3):
                step.clear()
                writer.write(chunk(b"event %d\n\n" % i))
                await writer.drain()
                await step.wait()  # the next one only once the sink has this one
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with lean_serving(handler) as (client, url):
        for _ in range(2):
            calls: list[tuple[bytes, bool]] = []

            def sink(data: bytes, last: bool, calls: list[tuple[bytes, bool]] = calls) -> None:
                calls.append((data, last))
                if not last:
                    step.set()

            resp = await stream(client, url)
            await asyncio.wait_for(resp.pipe(sink), 5)
            body = b"".join(c for c, _ in calls)
            assert body == b"event 0\n\nevent 1\n\nevent 2\n\n"
            assert [last for _, last in calls] == [False] * (len(calls) - 1) + [True]
            assert len(calls) >= 3  # one call per read: the events came one by one
    assert connections == 1  # the first stream's connection served the second


async def test_what_arrived_before_the_pipe_goes_in_one_last_call() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"a") + chunk(b"b") + b"0\r\n\r\n")
        await writer.drain()

    async with lean_serving(handler) as (client, url):
        resp = await stream(client, url)
        await asyncio.sleep(0.1)  # the whole body is read before anyone pipes it
        calls: list[tuple[bytes, bool]] = []
        await resp.pipe(lambda data, last: calls.append((data, last)))
        assert calls == [(b"ab", True)]


async def test_an_end_that_comes_alone_is_an_empty_last_call() -> None:
    end = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data"))
        await writer.drain()
        await end.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with lean_serving(handler) as (client, url):
        resp = await stream(client, url)
        calls: list[tuple[bytes, bool]] = []

        def sink(data: bytes, last: bool) -> None:
            calls.append((data, last))
            end.set()

        await asyncio.wait_for(resp.pipe(sink), 5)
        assert calls == [(b"data", False), (b"", True)]


async def test_the_read_timeout_counts_from_the_last_read() -> None:
    """Chunks 0.2 s apart under a 0.35 s read timeout stream to the end of the trickle
    (1 s in all); the stall after it fails the pipe with TimeoutError."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for i in range(5):
            writer.write(chunk(str(i).encode()))
            await writer.drain()
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)

    async with lean_serving(trickle) as (client, url):
        resp = await stream(client, url, read_timeout=0.35)
        got: list[bytes] = []
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await resp.pipe(lambda data, last: got.append(data))
        assert b"".join(got) == b"01234"
        assert 1.0 < time.monotonic() - started < 2.5


async def test_an_upstream_that_breaks_mid_stream_fails_the_pipe_after_its_data() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"partial"))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()  # no terminating chunk

    async with lean_serving(handler) as (client, url):
        resp = await stream(client, url)
        calls: list[tuple[bytes, bool]] = []
        with pytest.raises(ConnectionError, match="upstream stream broke"):
            await resp.pipe(lambda data, last: calls.append((data, last)))
        assert calls == [(b"partial", False)]


@pytest.mark.parametrize("how", ["sink raises", "consumer cancelled"])
async def test_a_consumer_that_fails_or_leaves_aborts_the_upstream(how: str) -> None:
    closed = asyncio.Event()
    more = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"first"))
        await writer.drain()
        await more.wait()
        writer.write(chunk(b"second"))  # the read that finds the pipe cancelled
        await writer.drain()
        if await reader.read(1) == b"":  # EOF: the client dropped the connection
            closed.set()

    async with lean_serving(handler) as (client, url):
        resp = await stream(client, url)
        if how == "sink raises":
            def sink(data: bytes, last: bool) -> None:
                raise RuntimeError("the client is gone")

            with pytest.raises(RuntimeError, match="the client is gone"):
                await resp.pipe(sink)
            more.set()
        else:
            got: list[bytes] = []
            piped = resp.pipe(lambda data, last: got.append(data))
            await asyncio.sleep(0.1)
            piped.cancel()
            more.set()
            assert got == [b"first"]
        await asyncio.wait_for(closed.wait(), 2)
        # The pool slot came back: a new request gets a connection.
        again = await stream(client, url)
        assert again.status == 200
        again.close()


async def test_closing_an_ended_response_leaves_its_reused_connection_alone() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(respond(b"ok"))
            await writer.drain()

    async with lean_serving(handler) as (client, url):
        first = await stream(client, url)
        assert await first.read() == b"ok"
        second = await stream(client, url)  # the same connection, now serving this one
        first.close()  # late: must not abort the second
        assert await second.read() == b"ok"
