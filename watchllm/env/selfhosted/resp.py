"""A lean Redis client for the hot path: RESP over asyncio, parsed by hiredis, pipelined.

Why not redis-py: its asyncio client costs ~95 µs of CPU per command here
(bench/load/redis_client.py) — two EVALSHA per rate-limited request cost more than the
rest of the request. This client keeps a few connections per worker and pipelines
commands on them (responses come back in order, so each connection is a FIFO of
futures); hiredis (the C parser redis-py itself uses) does the parsing. It does only
what the hot path needs: `execute(*args)`, errors as `RespError`, reconnect on failure.
Everything else (admin commands, scripts loading, pub/sub) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """Redis answered with an error reply (e.g. NOSCRIPT, WRONGTYPE)."""


def _pack(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=RespError)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.closed = False
        self._pending: list[bytes] = []  # commands of this loop tick, written together

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiters:
            reply = self.reader.gets()
            if reply is False:
                return
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"redis connection lost: {exc or 'closed by server'}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        """Queue a command; the commands of one loop tick go out in one write (one syscall,
        and Redis answers them in one read), which is most of a command's cost here."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiters.append(waiter)
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(payload)
        return waiter

    @property
    def filling(self) -> bool:
        """Commands are waiting for this tick's write: a new one should join them."""
        return bool(self._pending) and not self.closed

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:  # written early by `LeanRedis.submit`
            return
        if self.closed or self.transport is None or self.transport.is_closing():
            self.connection_lost(None)  # fails every waiter still queued
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def expire(self, waiter: asyncio.Future[Any], drop: bool = True) -> None:
        """A reply took too long: its caller gets TimeoutError. With `drop`, and while the
        reply has still not come, the connection is dropped too (failing all in flight on
        it): replies come in order, so one that never comes holds up every later one."""
        if not waiter.done():
            waiter.set_exception(TimeoutError("redis did not answer in time"))
        if drop and waiter in self.waiters:  # a late reply would pop it (and be ignored)
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class LeanRedis:
    """`await client.execute("EVALSHA", sha, 1, key, arg)` — pipelined over `size` connections."""

    def __init__(self, url: str, size: int = 4, connect_timeout_s: float = 2.0,
                 timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise ValueError(f"lean Redis client supports redis:// URLs, got {parts.scheme}://")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s  # per command; a slower reply drops its connection
        self._conns: list[_Connection | None] = [None] * size
        self._next = itertools.cycle(range(size))
        self._connecting: dict[int, asyncio.Task[_Connection]] = {}
        self._last: _Connection | None = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port), self.connect_timeout_s)
        if self.password is not None:
            auth = (self.username, self.password) if self.username else (self.password,)
            await conn.send(_pack(("AUTH", *auth)))
        if self.db:
            await conn.send(_pack(("SELECT", self.db)))
        return conn

    def _pick(self) -> tuple[int, _Connection | None]:
        """The connection for the next command: the one this tick already writes to, else
        the next slot's; (slot, None) when that slot is not connected."""
        last = self._last
        if last is not None and last.filling:  # join the write this tick already has
            return -1, last
        i = next(self._next)
        conn = self._conns[i]
        return i, conn if conn is not None and not conn.closed else None

    async def _connection(self) -> _Connection:
        i, conn = self._pick()
        if conn is not None:
            return conn
        task = self._connecting.get(i)
        if task is None:  # one connect per slot, however many callers are waiting
            task = self._connecting[i] = asyncio.ensure_future(self._connect())
        try:
            conn = await asyncio.shield(task)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to redis {self.host}:{self.port}: "
                                  f"{exc or type(exc).__name__}") from None
        finally:
            if task.done():
                self._connecting.pop(i, None)
        self._conns[i] = self._last = conn
        return conn

    def submit(self, timeout_s: float, *args: Any) -> asyncio.Future[Any] | None:
        """Write one command now, without a coroutine: the future of its reply (an error
        reply is a `RespError` result, a lost connection or timeout its exception). None
        when no connection is ready yet: then use `execute`, which connects. For callers
        that batch a loop tick themselves (`RedisLimiter`)."""
        conn = self._pick()[1]
        if conn is None:  # that slot is not connected: any that is
            conn = next((c for c in self._conns if c is not None and not c.closed), None)
            if conn is None:
                return None
        waiter = conn.send(_pack(args))
        conn._flush()  # with whatever else this tick queued on it, in order
        loop = asyncio.get_running_loop()
        # A caller's timeout shorter than the client's fails only that caller; the shared
        # connection is dropped only once the client's own timeout has passed too.
        drop = timeout_s >= self.timeout_s
        timer = loop.call_later(timeout_s, conn.expire, waiter, drop)
        waiter.add_done_callback(lambda _: timer.cancel())
        if not drop:
            loop.call_later(self.timeout_s, conn.expire, waiter)
        return waiter

    async def execute(self, *args: Any) -> Any:
        conn = await self._connection()
        waiter = conn.send(_pack(args))
        # A bare timer rather than asyncio.timeout(): this runs for every command.
        timer = asyncio.get_running_loop().call_later(self.timeout_s, conn.expire, waiter)
        try:
            reply = await waiter
        finally:
            timer.cancel()
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def close(self) -> None:
        for conn in self._conns:
            if conn is not None:
                conn.close()
        self._conns = [None] * self.size
