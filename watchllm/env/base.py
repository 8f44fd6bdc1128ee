"""The Env seam: what business code may ask of the runtime.

Each Protocol has one job. Adapters live in `watchllm/env/<runtime>/`; nothing outside
`watchllm/env/` and `watchllm/entrypoints/` imports them or asks which runtime it is on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from watchllm.http.asgi import Push
from watchllm.settings import Mode, Settings

if TYPE_CHECKING:
    from watchllm.limits.ops import Op, Outcome

Row = dict[str, Any]
# Where a pushed body goes (see HttpResponse's optional `pipe`): `sink(chunk, more)`, the
# shape of a server's synchronous body write (`http.asgi.Push`), so that write is a sink.
BodySink = Push


@runtime_checkable
class SqlDatabase(Protocol):
    """Parameterised SQL with `?` placeholders; adapters translate for their dialect."""

    dialect: str  # "sqlite" | "postgres" | "d1"

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements atomically (all or none)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class KeyValue(Protocol):
    """Bytes values with a TTL (the response cache). An in-process store may also offer
    `get_now(key)`, `get` without a coroutine (ResponseCache uses it when present)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set only if absent (a short lock); True when this call set it."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class Counters(Protocol):
    """Atomic counters for limits and budgets, shared by every worker of the runtime."""

    async def incr(self, key: str, amount: float, ttl_s: float) -> float:
        """Add `amount` (may be negative) and return the new value; the key expires after ttl."""
        ...

    async def get(self, key: str) -> float: ...

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        """Evaluate a batch of limit checks atomically: all writes or none.

        The semantics are `watchllm/limits/ops.py` (GCRA rates, concurrency leases,
        period quotas); the in-process adapter runs that code, Redis runs its Lua port
        (`watchllm.limits.redis.RedisLimiter`) in one round trip. `now_ms` None means
        the backend's own clock. Raises `CountersUnavailable` when the backend is down.
        """
        ...

    async def close(self) -> None: ...


class CountersUnavailable(ConnectionError):
    """The counters backend could not be reached; limits then fail open or closed."""


@runtime_checkable
class EventQueue(Protocol):
    """Events leave the request path here; `put` never blocks and never raises."""

    def put(self, event: Row) -> None: ...

    def depth(self) -> int: ...

    async def flush(self) -> None:
        """Deliver everything accepted so far (used at shutdown and by tests)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class VectorIndex(Protocol):
    """Semantic-cache vectors, partitioned by namespace."""

    async def add(self, namespace: str, id: str, vector: Sequence[float]) -> None: ...

    async def remove(self, namespace: str, id: str) -> bool: ...

    async def search(
        self, namespace: str, vector: Sequence[float], k: int, threshold: float
    ) -> list[tuple[str, float]]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Analytics(Protocol):
    """ClickHouse: RowBinary inserts and parameterised queries."""

    async def insert_rowbinary(
        self, table: str, columns: Sequence[str], data: bytes, dedup_token: str | None = None
    ) -> None:
        """Insert RowBinary rows. `dedup_token` (ClickHouse's insert_deduplication_token):
        an insert repeating a recent token is dropped, in the table and in the materialized
        views fed from it, so a batch re-sent after a crash is stored once. Equal tokens
        must mean equal data."""
        ...

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...

    async def close(self) -> None: ...


class HttpResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Lower-case names."""
        ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive off the wire (never buffered)."""
        ...

    def ended(self) -> bool:
        """True when the chunk just yielded was the last: the body has ended and nothing
        is left to yield (False when the client cannot tell before the next read)."""
        ...

    def close(self) -> None:
        """Abort the exchange (cancels the upstream request if still running)."""
        ...

    # Optional, not part of the Protocol: `pipe(sink: BodySink, kept, on_first) ->
    # Future[None]`, the body pushed to the sink as it is read instead of pulled (see
    # `env.http_lean`).


@runtime_checkable
class HttpClient(Protocol):
    """Outbound HTTP: one pooled keep-alive client per worker."""

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> HttpResponse:
        """Send a request and return once the status line and headers have arrived.

        Raises `ConnectError` when no connection could be made and `TimeoutError` when
        the upstream does not answer in time.
        """
        ...

    async def close(self) -> None: ...


class ConnectError(OSError):
    """The upstream could not be reached (safe to retry: nothing was sent)."""


Check = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Env:
    """Everything runtime-specific, built once at start-up by an entry point."""

    mode: Mode
    settings: Settings
    db: SqlDatabase
    kv: KeyValue
    counters: Counters
    events: EventQueue
    http: HttpClient
    vectors: VectorIndex | None = None
    analytics: Analytics | None = None
    # name -> async check raising on failure; /ready runs them all.
    checks: dict[str, Check] = field(default_factory=dict)
    # Extra resources to close at shutdown (after the named seams), last first.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        await self.events.close()
        for closer in reversed(self.closers):
            await closer()
        for part in (self.vectors, self.analytics, self.kv, self.counters, self.db, self.http):
            if part is not None:
                await part.close()
