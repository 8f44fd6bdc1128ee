"""`proxy.streaming.forward_stream` in both modes, over the lean client and a real socket
upstream: pushed (a server's synchronous body write, `BODY_PUSH`) and pulled (ASGI `send`).
Both deliver the same bytes and end the response once; a client that is gone is a
disconnect (recorded as 499), not an upstream error, and the upstream is aborted."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tests.contract.test_http_client import SSE_HEAD, lean_serving, read_request
from tests.contract.test_lean_pipe import chunk
from watchllm.env.http_lean import LeanHttpClient
from watchllm.http.asgi import Push, Receive, Send
from watchllm.proxy.base import UpstreamResult
from watchllm.proxy.streaming import WATCH_AFTER_S, StreamOutcome, _late, forward_stream

EVENTS = [b"data: {\"n\":%d}\n\n" % i for i in range(4)]


async def forwarded(client: LeanHttpClient, url: str, send: Send, receive: Receive,
                    push: Push | None) -> StreamOutcome:
    """One upstream stream through `forward_stream`, pushed when `push` is given."""
    resp = await client.request("POST", url, {}, b"{}", connect_timeout=2, read_timeout=5)
    result = UpstreamResult(resp.status, dict(resp.headers), chunks=resp.iter_chunks(),
                            close=resp.close, ended=resp.ended, pipe=resp.pipe)
    return await asyncio.wait_for(forward_stream(
        send, receive, result, [("content-type", "text/event-stream")], time.perf_counter(),
        push), 5)


async def never() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {}


@pytest.mark.parametrize("mode", ["push", "pull"])
@pytest.mark.parametrize("client_leaves", [False, True])
async def test_forwarding(mode: str, client_leaves: bool) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

        async def watch() -> None:
            if await reader.read(1) == b"":  # EOF: the gateway dropped the upstream
                closed.set()

        watching = asyncio.ensure_future(watch())
        writer.write(SSE_HEAD)
        for event in EVENTS:
            writer.write(chunk(event))
            await writer.drain()
            await asyncio.sleep(0.02)  # one read each
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.wait([watching], timeout=1)

    written: list[tuple[bytes, bool]] = []
    messages: list[dict[str, Any]] = []

    def push(body: bytes, more: bool) -> None:
        if client_leaves and written:
            raise RuntimeError("RSGI transport is closed")
        written.append((body, more))

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body":
            push(message["body"], message["more_body"])

    async with lean_serving(handler) as (client, url):
        outcome = await forwarded(client, url, send, never, push if mode == "push" else None)
        if client_leaves:
            await asyncio.wait_for(closed.wait(), 2)  # the upstream was aborted

    assert messages[0]["type"] == "http.response.start"
    assert (len(messages) > 1) == (mode == "pull")  # pushed bodies bypass send
    if client_leaves:
        assert outcome.disconnected and not outcome.complete
        assert written == [(EVENTS[0], True)]
    else:
        assert outcome.complete and not outcome.disconnected and outcome.error is None
        assert b"".join(body for body, _ in written) == b"".join(EVENTS) == outcome.raw()
        assert [more for _, more in written][-1] is False
        assert all(more for _, more in written[:-1])
        assert len(written) >= 3  # chunk by chunk, not buffered
        assert outcome.ttft_s is not None and outcome.ttft_s < 0.5


@pytest.mark.parametrize("mode", ["push", "pull"])
@pytest.mark.parametrize("stalls", [False, True])
async def test_the_disconnect_watcher_starts_only_for_a_long_stream(mode: str,
                                                                    stalls: bool) -> None:
    """A stream still running after WATCH_AFTER_S gets a watcher (it starts by twice
    that): a client that leaves while the upstream stalls stops it. A short stream never
    starts one, not even after it ended."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(EVENTS[0]) + (b"" if stalls else b"0\r\n\r\n"))
        await writer.drain()
        if await reader.read(1) == b"":  # stalled until the gateway drops the upstream
            closed.set()

    asked: list[float] = []

    async def receive() -> dict[str, Any]:
        asked.append(time.perf_counter())
        return {"type": "http.disconnect"}  # the client has gone

    async def send(message: dict[str, Any]) -> None:
        pass

    async with lean_serving(handler) as (client, url):
        started = time.perf_counter()
        outcome = await forwarded(client, url, send, receive,
                                  (lambda body, more: None) if mode == "push" else None)
        if stalls:
            await asyncio.wait_for(closed.wait(), 2)
        else:
            await asyncio.sleep(3 * WATCH_AFTER_S)  # past any tick that could start one
    if stalls:
        assert outcome.disconnected and not outcome.complete
        # (by twice WATCH_AFTER_S; the slack is for a loaded machine)
        assert len(asked) == 1 and WATCH_AFTER_S <= asked[0] - started < 2 * WATCH_AFTER_S + 0.5
    else:
        assert outcome.complete and asked == []
        assert _late[threading.get_ident()].timer is None  # no tick left running
