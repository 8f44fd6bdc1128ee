"""HttpClient for the hot path: HTTP/1.1 keep-alive over asyncio, parsed by httptools.

Why not aiohttp: on this machine aiohttp's client costs ~180 us of CPU per request
(bench/micro/http_client.py), most of the whole per-request budget of the gateway. This
client does only what an upstream call needs — one request per pooled connection, bodies
by Content-Length or chunked (httptools decodes), streaming with back-pressure, connect
and read timeouts, TLS — and costs a fraction of that. Proxies (HTTPS_PROXY) are not
supported here; `make_http_client` picks aiohttp when one is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

import httptools

from watchllm.env.base import BodySink, ConnectError
from watchllm.env.http_aiohttp import AiohttpClient

# Bytes read for a streamed body (chunk framing included) and not yet taken by its
# consumer, before we stop reading from the socket.
_HIGH_WATER = 1 << 20
_IDLE_TTL_S = 30.0
_HEADS_KEPT = 1024  # request heads remembered (method, URL and headers): then forgotten


class _Response:
    """One response; filled by the connection's parser callbacks, read by the caller."""

    __slots__ = ("_conn", "_deadline", "_kept", "_on_first", "_sink", "_timer", "_waiter",
                 "buffered", "chunks", "done", "error", "headers", "status", "streaming")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = conn.body  # the parser appends to it (on_body)
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.streaming = False  # back-pressure only applies to a consumer reading chunks
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._sink: BodySink | None = None  # set by pipe(), with the two below
        self._kept: list[bytes] | None = None
        self._on_first: Callable[[], None] | None = None

    def _wake(self) -> None:
        if self._sink is not None:
            self._push()
            return
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _waiting(self, limit_s: float) -> asyncio.Future[None]:
        """The future the next read (or the read timeout) completes: awaited by the caller
        itself, not through a coroutine of its own (a stream waits once per read, and
        each level of coroutine is resumed on every wake-up). A done future left in
        `_waiter` is inert: `_wake` and `_timeout` skip it."""
        # One timer per response, not one per wait: it re-arms itself for the current
        # wait's deadline when an earlier one comes due.
        loop = self._conn.loop  # not get_running_loop(): on 3.11 each call is a getpid()
        w = self._waiter = loop.create_future()
        self._deadline = loop.time() + limit_s
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._timeout)
        return w

    def _timeout(self) -> None:
        self._timer = None
        w = self._waiter
        if w is None or w.done():
            return  # not waiting: the next wait arms a timer of its own
        loop = self._conn.loop
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._timeout)
        else:
            w.set_exception(TimeoutError("upstream did not send data within the read timeout"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def read(self) -> bytes:
        try:
            while not self.done and self.error is None:
                await self._waiting(self._conn.read_timeout)
        except BaseException:  # the read timeout, or the caller cancelled: give it back
            self.close()
            raise
        if self.error is not None and not self.done:
            self.close()
            raise ConnectionError(f"upstream response broke: {self.error}")
        self._stop_timer()
        body = b"".join(self.chunks)
        self.chunks.clear()
        self._conn.release()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        self.streaming = True
        try:
            while True:
                if self.chunks:
                    # All that has arrived, in one piece: a read often holds several
                    # HTTP chunks (SSE events), and each piece costs a write downstream.
                    if len(self.chunks) == 1:
                        chunk = self.chunks.popleft()
                    else:
                        chunk = b"".join(self.chunks)
                        self.chunks.clear()
                    if self.buffered > _HIGH_WATER:  # reading was paused: resume it
                        self._conn.resume()
                    self.buffered = 0  # everything that had arrived
                    yield chunk
                elif self.done:
                    break
                elif self.error is not None:
                    raise ConnectionError(f"upstream stream broke: {self.error}")
                else:
                    await self._waiting(self._conn.read_timeout)
        finally:
            self._stop_timer()
            if self.done:
                self._conn.release()
            else:
                self.close()

    def ended(self) -> bool:
        return self.done and not self.chunks and self.error is None

    def pipe(self, sink: BodySink, kept: list[bytes] | None = None,
             on_first: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Hand the body to `sink(chunk, more)` from now on, in the callback of the read
        that brought it, instead of waking a reader: a stream's events are forwarded
        without a task switch (and four levels of Python resumed) per read. `more` is
        False once, on the last call (its chunk may be empty): ASGI's `more_body`, so a
        server's synchronous body write (`http.asgi.BODY_PUSH`) is a sink as it is, with
        no Python of the caller's between a read and its write. Each chunk is appended
        to `kept` (when given) before it is handed over, and `on_first()` runs before
        the first. The future completes after the last call; it fails with
        ConnectionError when the upstream breaks, TimeoutError when a read takes longer
        than the read timeout, or what `sink` raised (the upstream is then aborted).
        Cancelling it aborts the upstream too."""
        self._sink = sink
        self._kept = kept
        self._on_first = on_first
        w = self._waiting(self._conn.read_timeout)
        w.add_done_callback(self._piped)
        self._push()  # what arrived before
        return w

    def _piped(self, w: asyncio.Future[None]) -> None:
        """Every end but the body's own (a timeout, a failure, a cancel) aborts the
        upstream (`close` is a no-op once the response was released)."""
        if w.cancelled() or w.exception() is not None:
            self.close()

    def _push(self) -> None:
        w = self._waiter
        sink = self._sink
        if w is None or sink is None or w.done():  # (done: cancelled, or failed already)
            self.close()
            return
        chunks = self.chunks
        last = self.done and self.error is None
        if chunks or last:
            if not chunks:
                chunk = b""
            elif len(chunks) == 1:
                chunk = chunks.popleft()
            else:
                chunk = b"".join(chunks)
                chunks.clear()
            if self._on_first is not None:
                first, self._on_first = self._on_first, None
                first()
            if self._kept is not None:
                self._kept.append(chunk)
            try:
                sink(chunk, not last)
            except Exception as exc:  # the awaiting task's to handle
                self.close()
                w.set_exception(exc)
                return
        if last:
            self._stop_timer()
            self._conn.release()
            w.set_result(None)
        elif self.error is not None:
            self.close()
            w.set_exception(ConnectionError(f"upstream stream broke: {self.error}"))
        else:  # the read timeout runs from this read (the one timer re-arms itself)
            self._deadline = self._conn.loop.time() + self._conn.read_timeout

    def close(self) -> None:
        """Abort: drop the connection so the upstream sees the request cancelled. A no-op
        once the response has ended (its connection may be serving another request)."""
        self._stop_timer()
        if self._conn.response is self:
            self._conn.abort()


class _Connection(asyncio.Protocol):
    __slots__ = ("_header", "_reused", "body", "closed", "idle_since", "loop", "on_body",
                 "parser", "pool", "read_timeout", "response", "transport")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        # httptools calls `on_body` for each HTTP chunk of a body: this deque's own append,
        # no Python frame per chunk (a stream's SSE events are chunks). One deque and one
        # parser serve every response of the connection: each response's body is in it
        # while that response is the connection's (see `release`). Never reassigned: the
        # parser holds this deque's append from here on.
        self.body: deque[bytes] = deque()
        self.on_body = self.body.append
        self.parser = httptools.HttpResponseParser(self)
        self.response: _Response | None = None
        self.closed = False
        self.read_timeout = 600.0
        self.idle_since = 0.0
        self.loop: asyncio.AbstractEventLoop
        self._header: bytes = b""
        self._reused = False

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.loop = asyncio.get_running_loop()  # the connection's loop, looked up once
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small SSE writes must not wait for delayed ACKs (Nagle)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # nothing asked: an upstream that talks out of turn
            self.abort()
            return
        if r.done:  # more after the whole response: the connection cannot be reused
            self.closed = True
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            r = self.response
            self._fail(exc)
            self.abort()
            if r is not None:
                r._wake()  # its message may have completed in this read, before the error
            return
        # One wake-up per read, not one per parser callback: a read of a stream often
        # holds many HTTP chunks (SSE events).
        r = self.response
        if r is not None:
            if r._sink is not None:  # piped: the read's chunk goes out from here
                r._push()
                return
            if r.streaming:  # back-pressure, counted per read (framing included)
                r.buffered += len(data)
                if r.buffered > _HIGH_WATER and self.transport is not None:
                    self.transport.pause_reading()
            r._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r = self.response
        if (exc is None and r is not None and r.status and "content-length" not in r.headers
                and "chunked" not in r.headers.get("transfer-encoding", "")):
            r.done = True  # a body delimited by the end of the connection
            r._wake()
            return
        self._fail(exc or ConnectionResetError("connection closed by upstream"))

    # -- httptools callbacks --------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_begin(self) -> None:
        r = self.response
        if r is not None and r.done:  # an unasked response after it, in the same read
            self.closed = True
            # The parser appends the body to the deque it was given (on_body): this one's
            # moves to a new deque, so that one's gets none of it.
            r.chunks = deque(r.chunks)

    def on_headers_complete(self) -> None:
        r = self.response
        if r is not None and not r.done:  # (done: an unasked response; on_message_complete)
            status = self.parser.get_status_code()
            if 100 <= status < 200:  # an interim response (100, 103): the real one follows
                r.headers.clear()
                return
            r.status = status

    def on_message_complete(self) -> None:
        r = self.response
        if r is not None and r.status:  # not the end of an interim (1xx) response
            r.done = True
        if not self.parser.should_keep_alive():
            self.closed = True

    # -- use --------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        r = self.response
        if r is not None and not r.done and r.error is None:
            r.error = exc
            r._wake()

    def resume(self) -> None:
        if self.transport is not None and self.response is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close now; if a request was using this connection, give its pool slot back."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if self.response is not None:
            self.response = None
            self.pool.release_slot()

    def release(self) -> None:
        """The response was read to its end: the connection may serve the next request."""
        if self.response is None:
            return
        if self.closed or self.transport is None or self.transport.is_closing():
            self.abort()
            return
        # The connection's deque is the next response's: this one keeps what is left of
        # its body (nothing, unless its reader stopped early) in one of its own.
        self.response.chunks = deque(self.body)
        self.body.clear()
        self.response = None
        self.transport.resume_reading()
        self.pool.put_back(self)

    def send(self, head: bytes, body: bytes | None, read_timeout: float) -> _Response:
        """Write the request; its response is the connection's until it has been read (the
        caller waits for its head: `LeanHttpClient.request`)."""
        assert self.transport is not None
        self.read_timeout = read_timeout
        r = self.response = _Response(self)
        self.transport.write(head + body if body else head)
        return r


class _Pool:
    """Keep-alive connections to one origin, at most `limit` in use at once."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, limit: int) -> None:
        self.host, self.port, self.tls, self.limit = host, port, tls, limit
        self.idle: list[_Connection] = []
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def acquire_now(self) -> _Connection | None:
        """A live idle connection, when one is there and a slot is free (no coroutine);
        None: await `acquire`."""
        if self.active < self.limit and self.idle:
            now = time.monotonic()
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed and now - conn.idle_since < _IDLE_TTL_S:
                    self.active += 1
                    conn._reused = True
                    return conn
                conn.abort()
        return None

    async def acquire(self, connect_timeout: float) -> _Connection:
        while self.active >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut
        idle = self.acquire_now()
        if idle is not None:
            return idle
        self.active += 1
        try:
            _, conn = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self.tls,
                server_hostname=self.host if self.tls else None), connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.release_slot()
            kind = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {kind}") from None
        conn._reused = False
        return conn

    def release_slot(self) -> None:
        self.active -= 1
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self.release_slot()

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class LeanHttpClient:
    def __init__(self, pool_size: int = 256) -> None:
        self.pool_size = pool_size
        self._pools: dict[str, _Pool] = {}
        self._heads: dict[tuple[object, ...], tuple[_Pool, bytes]] = {}
        self._tls: ssl.SSLContext | None = None

    def _head(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[_Pool, bytes]:
        """The pool for `url` and the request's head up to its Content-Length line."""
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        pool, host = self._pool(f"{scheme}://{netloc}")
        lines = [f"{method} /{path if slash else ''} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return pool, ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def _pool(self, origin: str) -> tuple[_Pool, str]:
        parts = urlsplit(origin)
        pool = self._pools.get(parts.netloc + parts.scheme)
        if pool is None:
            tls = None
            if parts.scheme == "https":
                tls = self._tls = self._tls or ssl.create_default_context()
            port = parts.port or (443 if tls else 80)
            pool = _Pool(parts.hostname or "", port, tls, self.pool_size)
            self._pools[parts.netloc + parts.scheme] = pool
        return pool, parts.netloc

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None, *, connect_timeout: float,
                      read_timeout: float) -> _Response:
        # A provider's calls repeat their method, URL and headers: their pool and request
        # head are looked up, not worked out again (~0.5 µs a request).
        key: tuple[object, ...] = (method, url, *headers.items())
        known = self._heads.get(key)
        if known is None:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            known = self._heads[key] = self._head(method, url, headers)
        pool, head = known
        head += b"Content-Length: %d\r\n\r\n" % (len(body) if body else 0)
        for attempt in (0, 1):
            conn = pool.acquire_now() or await pool.acquire(connect_timeout)
            r: _Response | None = None
            try:
                r = conn.send(head, body, read_timeout)
                # The status and headers, awaited here: no coroutine of their own (each
                # level is resumed on the wake-up). The read timeout's timer stays armed
                # for the body's wait: every way a response ends (read, iter_chunks, pipe,
                # close) stops it; the ways it fails here stop it below.
                while r.status == 0 and r.error is None:
                    await r._waiting(read_timeout)
                if r.status == 0:
                    raise ConnectError(f"connection failed before a response: {r.error}")
                return r
            except ConnectError:
                if r is not None:
                    r._stop_timer()
                # An idle connection the server had already closed: nothing was processed,
                # so one immediate retry on a fresh connection is safe.
                reused = conn._reused
                conn.abort()
                if not reused or attempt:
                    raise
            except BaseException:  # timed out, cancelled, or the write failed
                if r is not None:
                    r._stop_timer()
                conn.abort()
                raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._heads.clear()


def make_http_client(pool_size: int) -> LeanHttpClient | AiohttpClient:
    """The lean client, unless an HTTP(S) proxy is configured (aiohttp speaks CONNECT)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                        "http_proxy")):
        return AiohttpClient(pool_size, trust_env=True)
    return LeanHttpClient(pool_size)
