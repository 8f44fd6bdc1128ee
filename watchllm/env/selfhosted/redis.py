"""KeyValue and Counters on Redis (redis-py asyncio), shared by every worker and machine.

- `BlockingConnectionPool`: when every connection is busy a caller waits for one (the
  default pool raises `MaxConnectionsError` instead).
- Connection errors are retried with exponential backoff and jitter (redis-py `Retry`).
- Counter updates are one Lua script (INCRBYFLOAT + expiry set once), so concurrent
  workers never lose an increment nor leave a key without a TTL.
- When Redis stays down, fail mode `open` degrades to in-process stand-ins (a local LRU
  cache, local counters: limits still hold per process) and probes Redis again after a
  backoff; `closed` raises `ServiceUnavailableError`. `degraded` says which state we are
  in; `degraded_ops` counts the operations served without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from watchllm.env.base import CountersUnavailable
from watchllm.env.embedded.memory import LruKeyValue, MemoryCounters
from watchllm.env.selfhosted.resp import LeanRedis
from watchllm.errors import ServiceUnavailableError
from watchllm.limits.ops import Op, Outcome
from watchllm.limits.redis import RedisLimiter

T = TypeVar("T")
FailMode = Literal["open", "closed"]
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS[1] counter; ARGV[1] amount, ARGV[2] ttl in ms. Expiry is set when the key is new
# (or has lost its TTL), so a window never extends itself.
INCR_LUA = """
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def connect(url: str, max_connections: int = 64, timeout_s: float = 2.0) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # wait at most this long for a free connection
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)


class _Breaker:
    """Routes calls to Redis or, while it is down, to the fallback (fail mode open)."""

    def __init__(self, client: Redis, fail_mode: FailMode, what: str) -> None:
        self.client = client
        self.fail_mode = fail_mode
        self.what = what
        self.degraded = False
        self.degraded_ops = 0
        self.retry_at = 0.0
        self._backoff = 0.5

    async def call(
        self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        if self.degraded and time.monotonic() < self.retry_at:
            return await self._fallback(local, None)
        try:
            result = await remote()
        except _DOWN as e:
            self.trip()
            return await self._fallback(local, e)
        self.recovered()
        return result

    def trip(self) -> None:
        """Redis failed: serve without it until `retry_at` (backoff 0.5 s doubling to 10 s)."""
        self._backoff = min(self._backoff * 2, 10.0) if self.degraded else 0.5
        self.degraded = True
        self.retry_at = time.monotonic() + self._backoff

    def recovered(self) -> None:
        if self.degraded:
            self.degraded, self._backoff = False, 0.5

    async def _fallback(self, local: Callable[[], Awaitable[T]], e: BaseException | None) -> T:
        if self.fail_mode == "closed":
            raise ServiceUnavailableError(f"Redis ({self.what}) is unavailable: {e or 'down'}")
        self.degraded_ops += 1
        return await local()

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except _DOWN as e:
            raise ServiceUnavailableError(f"Redis is unreachable: {e}") from e


class RedisKeyValue:
    """The response cache: bytes values with a TTL, under `prefix`."""

    def __init__(self, client: Redis, prefix: str = "wl:kv:", fail_mode: FailMode = "open",
                 fallback_bytes: int = 64 << 20, owns_client: bool = True,
                 fast: LeanRedis | None = None) -> None:
        self.client = client
        # get/set/add/delete run on every cached request: through the lean client when given.
        self.fast = fast
        self.owns_client = owns_client
        self.prefix = prefix
        self.breaker = _Breaker(client, fail_mode, "cache")
        self.local = LruKeyValue(fallback_bytes)

    @property
    def degraded(self) -> bool:
        return self.breaker.degraded

    async def get(self, key: str) -> bytes | None:
        async def remote() -> bytes | None:
            if self.fast is not None:
                result: bytes | None = await self.fast.execute("GET", self.prefix + key)
                return result
            value = await self.client.get(self.prefix + key)
            return value if value is None or isinstance(value, bytes) else value.encode()

        return await self.breaker.call(remote, lambda: self.local.get(key))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        async def remote() -> None:
            px = max(1, int(ttl_s * 1000)) if ttl_s else None
            if self.fast is not None:
                await self.fast.execute("SET", self.prefix + key, value,
                                        *(("PX", px) if px else ()))
                return
            await self.client.set(self.prefix + key, value, px=px)

        await self.breaker.call(remote, lambda: self.local.set(key, value, ttl_s))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        async def remote() -> bool:
            px = max(1, int(ttl_s * 1000))
            if self.fast is not None:
                return await self.fast.execute("SET", self.prefix + key, value, "PX", px,
                                               "NX") is not None
            return bool(await self.client.set(self.prefix + key, value, px=px, nx=True))

        return await self.breaker.call(remote, lambda: self.local.add(key, value, ttl_s))

    async def delete(self, key: str) -> bool:
        async def remote() -> bool:
            if self.fast is not None:
                return bool(await self.fast.execute("DEL", self.prefix + key))
            return bool(await self.client.delete(self.prefix + key))

        return await self.breaker.call(remote, lambda: self.local.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _glob_escape(self.prefix + prefix) + "*"

        async def remote() -> int:
            removed = 0
            batch: list[Any] = []
            async for k in self.client.scan_iter(match=pattern, count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    removed += await self.client.unlink(*batch)
                    batch = []
            if batch:
                removed += await self.client.unlink(*batch)
            return removed

        return await self.breaker.call(remote, lambda: self.local.delete_prefix(prefix))

    async def ping(self) -> None:
        await self.breaker.ping()

    async def close(self) -> None:
        if self.owns_client:
            await self.client.aclose()


class RedisCounters:
    """Atomic float counters with a TTL (rate limits, budgets)."""

    def __init__(self, client: Redis, prefix: str = "wl:ctr:", fail_mode: FailMode = "open",
                 owns_client: bool = True, fast: LeanRedis | None = None,
                 timeout_s: float = 1.0) -> None:
        self.client = client
        self.owns_client = owns_client
        self.prefix = prefix
        self.breaker = _Breaker(client, fail_mode, "counters")
        self.local = MemoryCounters()
        self._incr = client.register_script(INCR_LUA)
        # The limiter is on every request's path: it uses the lean pipelined client when
        # one is given (`fast`), redis-py otherwise.
        # timeout_s (WATCHLLM_LIMITS_TIMEOUT): a slower script call counts as Redis down.
        self._limiter = RedisLimiter(fast or client, timeout_s=timeout_s, prefix=prefix)

    @property
    def degraded(self) -> bool:
        return self.breaker.degraded

    async def incr(self, key: str, amount: float, ttl_s: float) -> float:
        async def remote() -> float:
            ttl_ms = max(1, int(ttl_s * 1000))
            return float(await self._incr(keys=[self.prefix + key], args=[repr(amount), ttl_ms]))

        return await self.breaker.call(remote, lambda: self.local.incr(key, amount, ttl_s))

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        """Limit checks in one round trip (`watchllm.limits.redis`). While Redis is known to
        be down this fails fast with `CountersUnavailable`; LimitsService then applies
        its own fail mode (WATCHLLM_LIMITS_FAIL_MODE)."""
        b = self.breaker
        if b.degraded and time.monotonic() < b.retry_at:
            b.degraded_ops += 1
            raise CountersUnavailable("redis is down (waiting to probe again)")
        try:
            outcome = await self._limiter.apply(ops, now_ms)
        except CountersUnavailable:
            b.trip()
            b.degraded_ops += 1
            raise
        b.recovered()
        return outcome

    async def get(self, key: str) -> float:
        async def remote() -> float:
            value = await self.client.get(self.prefix + key)
            return float(value) if value is not None else 0.0

        return await self.breaker.call(remote, lambda: self.local.get(key))

    async def ping(self) -> None:
        await self.breaker.ping()

    async def close(self) -> None:
        if self.owns_client:
            await self.client.aclose()


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)
