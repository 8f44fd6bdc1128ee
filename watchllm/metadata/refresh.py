"""A per-worker cache of metadata every request reads (keys, limits, project settings).

Two things a plain TTL cache gets wrong under load:
- **A herd at expiry.** When a hot entry expires, every request in flight misses at once
  and each reads the store (50 concurrent clients: 50 reads of the same row, and a queue
  on the one SQLite thread or the PostgreSQL pool). Here one read per key is in flight;
  the others wait for it.
- **A stall every TTL.** Even one read makes the requests behind it wait. Here a hot entry
  is read again in the background once `REFRESH_AT` of its TTL has passed, while the
  cached value keeps being served, so a key in use never waits on the store.

What stays the same: an answer is never served past its TTL (counted from when its read
started), so a change made elsewhere is seen within the TTL; a TTL of 0 reads every time.
A reload that finds the same value keeps the cached object, so callers that compare by
identity (the remembered-hit path, proxy/hot.py) stay valid. Only the read registered for
a key stores its answer: `forget` (an admin change on this worker) unregisters the read in
flight, and a read given up on is replaced, so neither can store an older answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from watchllm import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("watchllm.metadata")
REFRESH_AT = 0.8  # of the TTL: a read in the last fifth of it starts a background reload
# A read in flight this long is taken for lost and replaced (and a waiter gives up on one
# after this long): a runtime that drops a finished request's work cannot stall later ones.
SHARED_WAIT_S = 2.0
RETRY_S = 1.0  # after a failed background reload, the next one waits this long


def _create_task(work: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_task(work)


# How a read runs in the background. The Cloudflare adapter sets its `wait_until`, which
# keeps the request that started a reload alive until the reload ends.
spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Future[Any]] = _create_task


class RefreshingCache(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V]], ttl_s: float, name: str = "",
                 ttl_of: Callable[[V], float] | None = None, max_size: int = 100_000) -> None:
        self._load = load
        self.ttl_s = ttl_s
        self.name = name  # the metric's label: watchllm_metadata_reads_total{cache}
        self._ttl_of = ttl_of  # a per-value TTL (e.g. shorter for "no such key")
        self.max_size = max_size
        # key -> (value, reload from, expires at): read directly by hot paths that cannot
        # afford peek's call (LimitsService.limits_now); written only here.
        self.entries: dict[K, tuple[V, float, float]] = {}
        self._loading: dict[K, tuple[asyncio.Future[V], float]] = {}  # the read, its start
        self._retry_at: dict[K, float] = {}  # background reloads that failed: not before
        self._running: set[asyncio.Future[V]] = set()  # strong references to every read

    def peek(self, key: K) -> V | None:
        """The cached value while it is fresh, without I/O (None if none). Starts the
        background reload when it is due."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now >= entry[1]:
            if now >= entry[2]:
                return None
            self._reload_ahead(key, now)
        return entry[0]

    async def get(self, key: K) -> V:
        entry = self.entries.get(key)
        if entry is not None:
            now = time.monotonic()
            if now < entry[1]:
                return entry[0]
            if now < entry[2]:
                self._reload_ahead(key, now)
                return entry[0]
        if self.ttl_s <= 0:  # not cached: every caller reads
            return await self._fetch(key)
        task = self._shared(key)
        try:
            # Shielded: a waiter that is cancelled (its client left) does not cancel the
            # read the others wait for.
            return await asyncio.wait_for(asyncio.shield(task), SHARED_WAIT_S)
        except TimeoutError:  # given up on: one new read, shared as the first was
            return await asyncio.shield(self._shared(key))

    def forget(self, key: K) -> None:
        self.entries.pop(key, None)
        self._loading.pop(key, None)

    def forget_where(self, match: Callable[[K], bool]) -> None:
        self.entries = {k: v for k, v in self.entries.items() if not match(k)}
        self._loading = {k: v for k, v in self._loading.items() if not match(k)}

    def clear(self) -> None:
        self.entries.clear()
        self._loading.clear()

    def _reload_ahead(self, key: K, now: float) -> None:
        loading = self._loading.get(key)
        if (loading is None or now - loading[1] >= SHARED_WAIT_S) \
                and now >= self._retry_at.get(key, 0.0):
            # No event loop (a synchronous caller): no reload ahead.
            with contextlib.suppress(RuntimeError):
                self._start(key, background=True)

    def _shared(self, key: K) -> asyncio.Future[V]:
        """The read of `key` in flight, unless it is lost; else a new one."""
        loading = self._loading.get(key)
        if loading is not None and time.monotonic() - loading[1] < SHARED_WAIT_S:
            return loading[0]
        return self._start(key)

    def _start(self, key: K, background: bool = False) -> asyncio.Future[V]:
        asyncio.get_running_loop()  # RuntimeError without one, before the coroutine exists
        holder: list[asyncio.Future[V]] = []
        work = self._read(key, holder)
        task = spawn(work) if background else _create_task(work)
        holder.append(task)
        self._loading[key] = (task, time.monotonic())
        self._running.add(task)
        task.add_done_callback(lambda t: self._done(key, t, background))
        return task

    def _done(self, key: K, task: asyncio.Future[V], background: bool) -> None:
        self._running.discard(task)
        loading = self._loading.get(key)
        if loading is not None and loading[0] is task:
            del self._loading[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Nobody may be waiting (a background reload): the entry just expires.
            log.warning("reading %r for the cache failed: %s", key, exc)
            if background:
                self._retry_at[key] = time.monotonic() + RETRY_S
        else:
            self._retry_at.pop(key, None)

    def _fetch(self, key: K) -> Awaitable[V]:
        """One read of the store, counted."""
        if self.name:
            metrics.metadata_read(self.name)
        return self._load(key)

    async def _read(self, key: K, me: list[asyncio.Future[V]]) -> V:
        started = time.monotonic()
        value = await self._fetch(key)
        loading = self._loading.get(key)
        if loading is None or loading[0] is not me[0]:
            return value  # forgotten or replaced meanwhile: answer its waiters, store nothing
        old = self.entries.get(key)
        if old is not None and old[0] == value:
            value = old[0]  # the same answer: the same object
        ttl = self.ttl_s if self._ttl_of is None else min(self._ttl_of(value), self.ttl_s)
        if len(self.entries) >= self.max_size and key not in self.entries:
            self.entries.clear()
        self.entries[key] = (value, started + ttl * REFRESH_AT, started + ttl)
        return value
