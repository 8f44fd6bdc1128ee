"""The HttpClient seam: one suite, every adapter (lean httptools client, aiohttp).

Edge cases use tiny raw-socket servers so each behaviour is forced exactly: chunked
bodies trickling in, a server that closes idle keep-alive connections, bodies delimited by
connection close, slow answers, clients hanging up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from watchllm.env.base import ConnectError, HttpClient
from watchllm.env.http_aiohttp import AiohttpClient
from watchllm.env.http_lean import LeanHttpClient, _Response
from watchllm.testing.servers import free_port

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["lean", "aiohttp"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[HttpClient]:
    c: HttpClient = LeanHttpClient(pool_size=4) if request.param == "lean" else AiohttpClient(4)
    yield c
    await c.close()


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    connections: list[asyncio.StreamWriter] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for w in connections:
            w.close()
        server.close()


@contextlib.asynccontextmanager
async def lean_serving(handler: Handler) -> AsyncIterator[tuple[LeanHttpClient, str]]:
    """`serve(handler)` and a lean client of one connection to it."""
    client = LeanHttpClient(pool_size=1)
    try:
        async with serve(handler) as url:
            yield client, url
    finally:
        await client.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return head[0], headers, body


def respond(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line, headers, body = await read_request(reader)
        writer.write(respond(line.encode() + b"|" + headers["x-test"].encode() + b"|" + body))
        await writer.drain()


async def call(c: HttpClient, url: str, body: bytes = b"{}", read_timeout: float = 5) -> bytes:
    resp = await c.request("POST", url, {"x-test": "yes"}, body, connect_timeout=2,
                           read_timeout=read_timeout)
    assert resp.status == 200
    return await resp.read()


async def test_request_line_headers_body_and_keep_alive(client: HttpClient) -> None:
    async with serve(echo_server) as url:
        for i in range(5):  # same connection, sequential requests
            assert await call(client, f"{url}/v1/x?q={i}", b"payload") == \
                f"POST /v1/x?q={i} HTTP/1.1|yes|payload".encode()
        results = await asyncio.gather(*(call(client, f"{url}/p", b"%d" % i) for i in range(20)))
        assert results == [b"POST /p HTTP/1.1|yes|%d" % i for i in range(20)]


async def test_large_bodies_both_ways(client: HttpClient) -> None:
    big = b"x" * (3 << 20)
    async with serve(echo_server) as url:
        assert (await call(client, url + "/big", big)).endswith(big)


async def test_chunked_stream_arrives_incrementally(client: HttpClient) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as url:
        resp = await client.request("POST", url + "/s", {}, b"{}", connect_timeout=2,
                                    read_timeout=5)
        chunks = resp.iter_chunks()
        assert await asyncio.wait_for(chunks.__anext__(), 2) == b"data: 1"
        release.set()
        assert b"".join([c async for c in chunks]) == b"data: 2"


async def test_server_closing_idle_connections_is_survived(client: HttpClient) -> None:
    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(respond(b"ok"))  # keep-alive promised...
        await writer.drain()
        writer.close()  # ...then the connection is closed while idle

    async with serve(one_shot) as url:
        for _ in range(3):
            assert await call(client, url) == b"ok"
            await asyncio.sleep(0.05)


async def test_body_until_connection_close(client: HttpClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
        await writer.drain()
        writer.close()

    async with serve(handler) as url:
        assert await call(client, url) == b"until-eof"


async def test_connect_error(client: HttpClient) -> None:
    with pytest.raises(ConnectError):
        await call(client, f"http://127.0.0.1:{free_port()}/")


async def test_read_timeout(client: HttpClient) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serve(slow) as url:
        with pytest.raises(TimeoutError):
            await call(client, url, read_timeout=0.3)


async def test_a_body_read_timeout_gives_the_connection_back() -> None:
    """A body that stalls past the read timeout: the connection is dropped and its pool
    slot freed, so the next request (pool of one) gets a connection."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            await reader.read(1)  # the rest never comes; the client hangs up

    async with lean_serving(handler) as (client, url):
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2,
                                    read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await resp.read()
        again = await asyncio.wait_for(
            client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=0.2), 2)
        assert again.status == 200
        again.close()


async def test_read_timeout_counts_from_the_last_chunk(client: HttpClient) -> None:
    """The read timeout bounds each wait for data: chunks 0.2 s apart under a 0.35 s
    timeout stream to the end (1 s in all); then a stall longer than it raises."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for i in range(5):
            writer.write(b"1\r\n" + str(i).encode() + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)  # then a stall

    async with serve(trickle) as url:
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2,
                                    read_timeout=0.35)
        got: list[bytes] = []
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async for chunk in resp.iter_chunks():
                got.append(chunk)  # noqa: PERF401 (the raise ends the loop; keep what came)
        assert b"".join(got) == b"01234"
        assert 1.0 < time.monotonic() - started < 2.5


async def test_close_mid_stream_reaches_the_server(client: HttpClient) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        if await reader.read(1) == b"":  # EOF: the client dropped the connection
            closed.set()

    async with serve(handler) as url:
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        assert await resp.iter_chunks().__anext__() == b"abc"
        resp.close()
        await asyncio.wait_for(closed.wait(), 2)


async def test_pool_limit_queues_instead_of_failing(client: HttpClient) -> None:
    active = 0
    peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            await read_request(reader)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            writer.write(respond(b"ok"))
            await writer.drain()

    async with serve(handler) as url:
        assert await asyncio.gather(*(call(client, url) for _ in range(30))) == [b"ok"] * 30
    assert peak <= 4  # pool_size


async def test_slow_consumer_of_a_large_stream_gets_every_byte(client: HttpClient) -> None:
    piece = b"y" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(80):  # 5 MiB, more than the client buffers before pausing
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as url:
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        total = 0
        async for chunk in resp.iter_chunks():
            total += len(chunk)
            await asyncio.sleep(0)
        assert total == 80 * len(piece)


async def test_a_stream_nobody_reads_pauses_the_socket_and_resumes() -> None:
    """The lean client stops reading a stream whose consumer falls over 1 MiB behind
    (the upstream then waits on TCP), and reads on once the consumer catches up."""
    piece = b"z" * 65536
    sent: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(640):  # 40 MiB: more than loopback's socket buffers hold
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            await writer.drain()
            sent.append(1)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with lean_serving(handler) as (client, url):
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        chunks = resp.iter_chunks()
        first = await chunks.__anext__()
        await asyncio.sleep(0.5)  # nobody reads: the client stops reading
        assert not resp._conn.transport.is_reading()  # type: ignore[attr-defined]
        assert len(sent) < 640  # the upstream is held back
        total = len(first) + sum([len(c) async for c in chunks])
        assert total == 640 * len(piece) and len(sent) == 640


@pytest.mark.parametrize("tail", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}XX",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}not http",
])
async def test_stray_bytes_after_a_complete_response_do_not_stall_it(client: HttpClient,
                                                                     tail: bytes) -> None:
    """A response that completes in a read ending in bytes the parser rejects is returned
    at once by the lean client (not after the read timeout); aiohttp refuses it at once."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(tail)
        await writer.drain()
        await asyncio.sleep(5)

    async with serve(handler) as url:
        got: bytes | None = None
        with contextlib.suppress(aiohttp.ClientError):
            got = await asyncio.wait_for(call(client, url, read_timeout=4), 2)
        assert got == b"{}" or not isinstance(client, LeanHttpClient)


@pytest.mark.parametrize("later", [False, True])
async def test_an_unasked_response_after_a_complete_one_is_not_its_body(later: bool) -> None:
    """Bytes after a complete response (an unasked second response, in the same read or a
    later one before the body was taken) are not appended to its body, and the connection
    is not reused: the next request gets its own answer over a new connection."""
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        while True:
            await read_request(reader)
            first = respond(b"{}")
            writer.write(first if later else first + stray)
            await writer.drain()
            if later:
                await asyncio.sleep(0.05)
                writer.write(stray)
                await writer.drain()

    async with lean_serving(handler) as (client, url):
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        await asyncio.sleep(0.2)  # the stray bytes have arrived
        assert await resp.read() == b"{}"
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        assert await resp.read() == b"{}"
        assert len(seen) == 2  # a second connection


async def test_an_interim_103_response_is_skipped(client: HttpClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(SSE_HEAD + b"7\r\ndata: 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as url:
        resp = await client.request("POST", url + "/s", {}, b"{}", connect_timeout=2,
                                    read_timeout=5)
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert b"".join([c async for c in resp.iter_chunks()]) == b"data: 1data: 2"


@pytest.mark.parametrize("split", [False, True])
async def test_ended_is_true_only_after_the_last_chunk(client: HttpClient, split: bool) -> None:
    """`ended()` after a yielded chunk: True only when nothing more will be yielded, with
    the terminator in the same read as the last chunk or in a later one."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + b"7\r\ndata: 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"7\r\ndata: 2\r\n" + (b"" if split else b"0\r\n\r\n"))
        await writer.drain()
        if split:
            await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with serve(handler) as url:
        resp = await client.request("POST", url + "/s", {}, b"{}", connect_timeout=2,
                                    read_timeout=5)
        seen = [(chunk, resp.ended()) async for chunk in resp.iter_chunks()]
    assert b"".join(c for c, _ in seen) == b"data: 1data: 2"
    assert not any(ended for _, ended in seen[:-1])
    assert seen[-1][1] is (not split)  # with the terminator still to come, it cannot know


async def test_header_values_are_their_bytes_as_latin1_text(client: HttpClient) -> None:
    """Both clients read a header value's bytes as latin-1 text, UTF-8 or not: the proxy
    turns that back into the bytes it sends on (routes.proxy._as_sent)."""
    utf8, legacy = "café ✓".encode(), b"caf\xe9"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Utf8: " + utf8
                     + b"\r\nX-Legacy: " + legacy + b"\r\n\r\n{}")
        await writer.drain()

    async with serve(handler) as url:
        resp = await client.request("POST", url + "/h", {}, b"{}", connect_timeout=2,
                                    read_timeout=5)
        assert await resp.read() == b"{}"
        assert resp.headers["x-utf8"].encode("latin-1") == utf8
        assert resp.headers["x-legacy"].encode("latin-1") == legacy


@pytest.mark.parametrize("end", ["read", "iter_chunks", "pipe", "close", "cancelled"])
async def test_no_read_timer_outlives_its_response(end: str) -> None:
    """However a response ends, its read-timeout timer is stopped: an armed one would hold
    the response (and its body) for the whole read timeout, ten minutes by default."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if end != "cancelled":  # (cancelled: no answer; the caller gives up waiting)
            writer.write(SSE_HEAD + b"5\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
        await reader.read(1)

    made: list[_Response] = []  # the request's response, however it ends

    async def one_request(client: LeanHttpClient, url: str) -> bytes:
        before = {id(o) for o in gc.get_objects() if type(o) is _Response}
        ask = asyncio.ensure_future(client.request("POST", url, {}, b"{}", connect_timeout=2,
                                                   read_timeout=600))
        if end == "cancelled":
            await asyncio.sleep(0.05)  # waiting for the headers, which never come
            made.extend(o for o in gc.get_objects()
                        if type(o) is _Response and id(o) not in before)
            ask.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ask
            return b""
        resp = await ask
        made.append(resp)
        if end == "read":
            return await resp.read()
        if end == "iter_chunks":
            return b"".join([c async for c in resp.iter_chunks()])
        if end == "pipe":
            got: list[bytes] = []
            await resp.pipe(lambda chunk, more: got.append(chunk))
            return b"".join(got)
        resp.close()
        return b""

    async with lean_serving(handler) as (client, url):
        body = await one_request(client, url)
    assert len(made) == 1 and made[0]._timer is None
    assert body == (b"hello" if end in ("read", "iter_chunks", "pipe") else b"")


async def test_a_body_left_unread_is_not_the_next_responses() -> None:
    """A stream whose reader stopped after its end had arrived, with the last chunk still
    unread, gives its connection back: the next response on that connection (its parser
    and body deque are the connection's) gets its own body, not that chunk."""
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        await read_request(reader)
        writer.write(SSE_HEAD + b"5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        await echo_server(reader, writer)

    async with lean_serving(handler) as (client, url):
        resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
        chunks = resp.iter_chunks()
        assert await anext(chunks) == b"first"
        await asyncio.sleep(0.2)  # the end has arrived, its chunk unread
        await chunks.aclose()
        assert await call(client, url, b"next") == b"POST / HTTP/1.1|yes|next"
        assert len(seen) == 1  # the same connection served both
