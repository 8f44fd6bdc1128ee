"""In-process KeyValue (an LRU bounded in bytes) and Counters, for the embedded runtime.

Both are per process: the embedded runtime runs one worker, so they are exact there.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from watchllm.limits.ops import MemoryLimiter, Op, Outcome


class LruKeyValue:
    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] and item[1] <= time.monotonic():
            self._drop(key)
            return None
        return item[0]

    def _drop(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.bytes -= len(item[0]) + len(key)
        return True

    def get_now(self, key: str) -> bytes | None:
        """`get` without a coroutine (an in-process store can answer at once)."""
        value = self._live(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        size = len(value) + len(key)
        if size > self.max_bytes:
            return  # larger than the whole cache: not cacheable here
        self._drop(key)
        self._data[key] = (value, time.monotonic() + ttl_s if ttl_s else 0.0)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> bool:
        return self._drop(key)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._data if k.startswith(prefix)]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def __len__(self) -> int:
        return len(self._data)

    async def close(self) -> None:
        self._data.clear()
        self.bytes = 0


class MemoryCounters:
    def __init__(self) -> None:
        self._data: dict[str, tuple[float, float]] = {}
        self._limiter = MemoryLimiter()
        # Limits in this process: LimitsService calls it directly and settles at once
        # (there is no round trip for deferring settle's deltas to save).
        self.local_limiter = self._limiter

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        return await self._limiter.apply(ops, now_ms)

    async def incr(self, key: str, amount: float, ttl_s: float) -> float:
        now = time.monotonic()
        value, expires = self._data.get(key, (0.0, 0.0))
        if expires and expires <= now:
            value, expires = 0.0, 0.0
        value += amount
        self._data[key] = (value, expires or now + ttl_s)
        if len(self._data) > 200_000:
            self._data = {k: v for k, v in self._data.items() if v[1] > now}
        return value

    async def get(self, key: str) -> float:
        value, expires = self._data.get(key, (0.0, 0.0))
        return 0.0 if expires and expires <= time.monotonic() else value

    async def close(self) -> None:
        self._data.clear()
