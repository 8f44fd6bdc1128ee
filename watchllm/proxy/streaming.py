"""Forward an upstream SSE stream chunk by chunk, and stop the upstream if the client leaves.

Chunks are written as they arrive (never buffered). A watcher waits on ASGI `receive` for
`http.disconnect`; when it comes it closes the upstream response (the provider sees the
request cancelled) and cancels the forwarding, without a per-chunk cost. The watcher (a
task) starts only once a stream has run for WATCH_AFTER_S (to twice that: one timer per
event loop starts the watchers of every stream old enough, instead of a timer per stream):
a client that leaves a stream that is still being generated is noticed then; a short
stream costs no task, and a client gone before it ends is noticed when the next write fails.

Under granian (the RSGI entry's `BODY_PUSH`) with the lean HTTP client, the chunks are
pushed: written from the callback of the upstream read that brought them, while this task
sleeps until the stream ends (docs/design.md). Otherwise this task pulls each chunk.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from threading import get_ident
from typing import Any

from watchllm.http.asgi import Push, Receive, Send, TextHeaders
from watchllm.proxy.base import UpstreamResult

WATCH_AFTER_S = 0.05


class _LateWatches:
    """Starts the disconnect watchers of one loop's streams once they have run for
    WATCH_AFTER_S, on one timer for all of them. A timer per stream (a uvloop handle set
    up and cancelled) cost ~1.1 µs; this is a dict insert and delete. Two generations: a
    tick starts the watchers of the streams registered before the previous tick, so each
    starts between WATCH_AFTER_S and twice that after its stream began."""

    __slots__ = ("loop", "old", "timer", "young")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.young: dict[object, Callable[[], None]] = {}  # since the last tick
        self.old: dict[object, Callable[[], None]] = {}  # from before it
        self.timer: asyncio.TimerHandle | None = None

    def add(self, key: object, start: Callable[[], None]) -> None:
        self.young[key] = start
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_AFTER_S, self._tick)

    def discard(self, key: object) -> None:
        if self.young.pop(key, None) is None:
            self.old.pop(key, None)

    def _tick(self) -> None:
        due, self.old, self.young = self.old, self.young, {}
        self.timer = self.loop.call_later(WATCH_AFTER_S, self._tick) if self.old else None
        for start in due.values():
            start()


_late: dict[int, _LateWatches] = {}  # per thread: its running loop's
if hasattr(os, "register_at_fork"):  # a forked child's thread ids and loops are not these
    os.register_at_fork(after_in_child=_late.clear)


def _late_watches() -> _LateWatches:
    """The running loop's watches. Found by thread: the loop that was running on this
    thread, if it still runs, is the running loop (a loop is not moved between threads
    while it runs; asyncio.get_running_loop() is a getpid() syscall per call on 3.11); a
    thread's next loop (tests run several) replaces its last."""
    late = _late.get(get_ident())
    if late is None or not late.loop.is_running():
        for thread in [t for t, lw in _late.items() if lw.loop.is_closed()]:
            del _late[thread]
        late = _late[get_ident()] = _LateWatches(asyncio.get_running_loop())
    return late


class StreamOutcome:
    __slots__ = ("chunks", "complete", "disconnected", "error", "ttft_s")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []  # what was sent, for usage capture and the cache
        self.complete = False
        self.disconnected = False
        self.error: str | None = None
        self.ttft_s: float | None = None

    def raw(self) -> bytes:
        return b"".join(self.chunks)


async def _watch_disconnect(receive: Receive, result: UpstreamResult, outcome: StreamOutcome,
                            task: asyncio.Task[object]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            outcome.disconnected = True
            result.close()
            task.cancel()
            return


async def forward_stream(send: Send, receive: Receive, result: UpstreamResult,
                         headers: TextHeaders, started: float,
                         push: Push | None = None) -> StreamOutcome:
    """Relay the stream. With `push` (the server's synchronous body write, `BODY_PUSH`)
    and a client that pushes (`result.pipe`), each read's chunk is written from the read's
    own callback; otherwise this task pulls each chunk and sends it."""
    outcome = StreamOutcome()
    late = _late_watches()
    task = asyncio.current_task(late.loop)  # with the loop given: no getpid()
    assert task is not None and result.chunks is not None
    watcher: list[Any] = []

    def watch() -> None:
        watcher.append(asyncio.ensure_future(_watch_disconnect(receive, result, outcome, task)))

    late.add(outcome, watch)
    last = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if push is not None and result.pipe is not None:
            def first() -> None:
                outcome.ttft_s = time.perf_counter() - started

            # The server's write is the sink itself: no Python of ours runs per read.
            try:
                await result.pipe(push, outcome.chunks, first)
            except RuntimeError:  # from push: the client is gone (granian: RSGIProtocolClosed)
                outcome.disconnected = True
                raise
            last = True
        else:
            async for chunk in result.chunks:
                if outcome.ttft_s is None:
                    outcome.ttft_s = time.perf_counter() - started
                outcome.chunks.append(chunk)
                # The upstream's last chunk ends our response in the same write (one
                # write fewer per stream; a short stream that came in one read is one).
                last = result.ended()
                try:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": not last})
                except (OSError, RuntimeError):  # the client is gone
                    outcome.disconnected = True
                    raise
        if not last:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        outcome.complete = True
    except asyncio.CancelledError:
        if not outcome.disconnected:
            raise
        task.uncancel()
    except (TimeoutError, OSError, RuntimeError) as exc:
        # Upstream broke mid-stream, or the client socket failed under us.
        outcome.error = str(exc) or type(exc).__name__
        result.close()
        if not outcome.disconnected:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (OSError, RuntimeError):
                outcome.disconnected = True
    finally:
        late.discard(outcome)
        for w in watcher:
            w.cancel()
        if not outcome.complete:
            result.close()  # cancelled: the upstream must not go on generating
    return outcome
