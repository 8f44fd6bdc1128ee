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

from tests.contract.test_http_client import (
    SSE_HEAD,
    Handler,
    lean_serving,
    read_request,
    respond,
)
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

            def sink(data: bytes, more: bool, calls: list[tuple[bytes, bool]] = calls) -> None:
                calls.append((data, more))
                if more:
                    step.set()

            resp = await stream(client, url)
            kept: list[bytes] = []
            firsts: list[int] = []
            await asyncio.wait_for(resp.pipe(sink, kept, lambda f=firsts, c=calls: f.append(
                len(c))), 5)
            body = b"".join(c for c, _ in calls)
            assert body == b"event 0\n\nevent 1\n\nevent 2\n\n"
            assert [more for _, more in calls] == [True] * (len(calls) - 1) + [False]
            assert len(calls) >= 3  # one call per read: the events came one by one
            assert kept == [c for c, _ in calls]  # each chunk kept as it was handed over
            assert firsts == [0]  # once, before the first call
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
        await resp.pipe(lambda data, more: calls.append((data, more)))
        assert calls == [(b"ab", False)]


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

        def sink(data: bytes, more: bool) -> None:
            calls.append((data, more))
            end.set()

        await asyncio.wait_for(resp.pipe(sink), 5)
        assert calls == [(b"data", True), (b"", False)]


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
            await resp.pipe(lambda data, more: got.append(data))
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
        kept: list[bytes] = []
        with pytest.raises(ConnectionError, match="upstream stream broke"):
            await resp.pipe(lambda data, more: calls.append((data, more)), kept)
        assert calls == [(b"partial", True)] and kept == [b"partial"]


async def test_a_sink_that_raises_fails_the_pipe_and_aborts_the_upstream() -> None:
    closed = asyncio.Event()
    async with lean_serving(first_then_stall(closed)) as (client, url):
        resp = await stream(client, url)

        def sink(data: bytes, more: bool) -> None:
            raise RuntimeError("the client is gone")

        with pytest.raises(RuntimeError, match="the client is gone"):
            await resp.pipe(sink)
        await asyncio.wait_for(closed.wait(), 2)
        await slot_came_back(client, url)


def first_then_stall(closed: asyncio.Event) -> Handler:
    """An upstream that sends a stream's head and first event, then stalls until the
    client drops the connection (`closed` is set then)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"first"))
        await writer.drain()
        if await reader.read(1) == b"":  # EOF: the client dropped the connection
            closed.set()

    return handler


async def slot_came_back(client: LeanHttpClient, url: str) -> None:
    """The pool (of one connection) gives a new request a connection."""
    again = await asyncio.wait_for(stream(client, url), 2)
    assert again.status == 200
    again.close()


@pytest.mark.parametrize("how", ["read timeout", "consumer cancelled"])
async def test_a_stalled_upstream_is_aborted_when_the_pipe_ends(how: str) -> None:
    """No read comes after the end: the pipe's own end aborts the upstream."""
    closed = asyncio.Event()
    async with lean_serving(first_then_stall(closed)) as (client, url):
        resp = await stream(client, url, read_timeout=0.3 if how == "read timeout" else 5)
        piped = resp.pipe(lambda data, more: None)
        if how == "read timeout":
            with pytest.raises(TimeoutError):
                await piped
        else:
            await asyncio.sleep(0.1)
            piped.cancel()
        await asyncio.wait_for(closed.wait(), 2)
        await slot_came_back(client, url)


async def test_a_sink_that_fails_on_the_last_call_aborts_instead_of_reusing() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(SSE_HEAD + chunk(b"all") + b"0\r\n\r\n")
            await writer.drain()

    async with lean_serving(handler) as (client, url):
        def sink(data: bytes, more: bool) -> None:
            if not more:
                raise RuntimeError("the client is gone")

        resp = await stream(client, url)
        with pytest.raises(RuntimeError):
            await resp.pipe(sink)
        await slot_came_back(client, url)
    assert connections == 2  # the failed one was not put back in the pool


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
        assert second._conn is first._conn
        first.close()  # late: must not abort the second
        assert await asyncio.wait_for(second.read(), 2) == b"ok"
