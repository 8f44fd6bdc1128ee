"""VectorIndex on PostgreSQL + pgvector (asyncpg): one semantic-cache index shared by every
replica, where the in-process index would give each worker its own.

One table per dimension (`watchllm_vectors_<dim>`), created lazily on first use with an
HNSW index (`vector_cosine_ops`); a namespace is a column and the primary key leads with
it. Search is `ORDER BY embedding <=> q LIMIT k` inside the namespace: a namespace of at
most EXACT_MAX rows (the usual case: the context key is part of it) is read through the
primary key and sorted exactly; a larger one goes through HNSW with pgvector 0.8's iterative
scan, which keeps walking the graph until k rows of the namespace are found (without it a
filtered HNSW scan returns only what the first `ef_search` candidates hold, often nothing).
Vectors travel in pgvector's binary format (struct-packed float4): 384 floats encode in
~9 us and 1.5 KB, against ~340 us and 7.5 KB as text `[0.1,...]` (bench/vectors/run.py).
`CREATE EXTENSION` puts pgvector in the first schema of the search path; that schema must
stay on the search path of every replica (the default, `public`, does).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Sequence
from typing import Any

from watchllm.env.selfhosted.postgres import where
from watchllm.errors import ServiceUnavailableError
from watchllm.settings import Settings, SettingsError

TABLE_PREFIX = "watchllm_vectors_"
HNSW_MAX_DIM = 2000  # pgvector's limit for indexing `vector`; above it search is exact
# Namespaces up to this many rows are searched exactly (exact_sql). Measured at 384
# dimensions: exact ~0.7 ms per 1,000 rows; counting ~0.35 ms per 1,000; HNSW ~1.5 ms.
EXACT_MAX = 1000
# Session settings (startup parameters, so asyncpg's RESET ALL on pool release keeps them).
SERVER_SETTINGS = {
    "hnsw.iterative_scan": "relaxed_order",
    # Candidates per HNSW search: 40 (pgvector's default) gave recall@5 0.87, 100 gave 0.99
    # at about the same latency (bench/vectors/run.py, 384 dimensions).
    "hnsw.ef_search": "100",
    # Left alone, the planner sorted whole namespaces of thousands of rows rather than use
    # HNSW (pgvector prices filtered HNSW scans high); off, the plan without a full Sort
    # node wins. Only this pool's statements see it: exact searches still sort (they have
    # no alternative), adds and removes do not sort.
    "enable_sort": "off",
    # A parallel plan for the (skipped) exact branch still launched its workers: 11 ms of
    # a 12 ms search over a 100,000-row namespace. These queries are too small to split.
    "max_parallel_workers_per_gather": "0",
}
_UNREACHABLE = (OSError, asyncio.TimeoutError)
log = logging.getLogger("watchllm.env")


class VectorExtensionMissing(ServiceUnavailableError):
    """The database has no pgvector (`CREATE EXTENSION vector` failed)."""


def encode(vector: Sequence[float]) -> bytes:
    """pgvector's binary input: dim (int16), unused (int16), dim big-endian float4s."""
    norm = math.hypot(*vector)
    if not 0.0 < norm < math.inf:  # NaN, inf or zero: no direction, no cosine
        raise ValueError("vector must be finite and non-zero")
    try:
        return struct.pack(f">hh{len(vector)}f", len(vector), 0, *vector)
    except (OverflowError, struct.error) as e:
        raise ValueError(f"vector does not fit float4: {e}") from None


def decode(data: bytes) -> list[float]:
    dim = struct.unpack_from(">h", data)[0]
    return list(struct.unpack_from(f">{dim}f", data, 4))


def exact_sql(table: str, exact_max: int) -> str:
    """$1 query vector, $2 namespace, $3 k, $4 threshold: exact top-k of a namespace of at
    most exact_max rows, or one row with a NULL id when it is larger (then: hnsw_sql).

    The size is counted through the primary key, stopping at exact_max + 1; the sort runs
    only under that bound (a one-time filter). `+ 0` keeps the planner off the HNSW index.
    """
    return (f"WITH n AS MATERIALIZED (SELECT count(*) AS n FROM (SELECT 1 FROM {table}"
            f" WHERE namespace = $2 LIMIT {exact_max + 1}) s),"
            " top AS MATERIALIZED ("
            f" SELECT id, (embedding <=> $1) + 0 AS distance FROM {table}"
            f" WHERE namespace = $2 AND (SELECT n FROM n) <= {exact_max}"
            " ORDER BY distance, id LIMIT $3)"
            f" SELECT NULL::text AS id, NULL::float8 AS score FROM n WHERE n > {exact_max}"
            " UNION ALL"
            " (SELECT id, 1 - distance FROM top WHERE 1 - distance >= $4"
            " ORDER BY distance, id)")


def hnsw_sql(table: str) -> str:
    """Same parameters, through HNSW (enable_sort off: SERVER_SETTINGS).

    Ordered by distance then id: the index gives distance order, an incremental sort
    settles ties. The threshold is applied outside, or an iterative scan would keep
    walking the graph for k rows above a threshold nothing reaches.
    """
    return ("WITH top AS MATERIALIZED ("
            f" SELECT id, embedding <=> $1 AS distance FROM {table}"
            " WHERE namespace = $2 ORDER BY distance, id LIMIT $3)"
            " SELECT id, 1 - distance AS score FROM top"
            " WHERE 1 - distance >= $4 ORDER BY distance, id")


async def _init_connection(conn: Any) -> None:
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'vector'")
    await conn.set_type_codec("vector", schema=schema, encoder=_encode_param, decoder=decode,
                              format="binary")


def _encode_param(value: Any) -> bytes:
    return value if isinstance(value, bytes) else encode(value)


async def ensure_extension(conn: Any, url: str) -> str:
    """Create pgvector if needed (idempotent); return its version, or raise naming it."""
    import asyncpg

    version: str | None = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    if version is not None:
        return version
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.UniqueViolationError:  # another replica created it at the same moment
        pass
    except asyncpg.PostgresError as e:  # not installed (0A000/58P01), or no privilege
        raise VectorExtensionMissing(
            f"PostgreSQL at {where(url)} has no pgvector extension \"vector\""
            f" ({getattr(e, 'message', e)}); "
            "install pgvector there (or run `CREATE EXTENSION vector` as a superuser)"
        ) from e
    return str(await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))


class PgVectorIndex:
    def __init__(self, pool: Any, url: str, exact_max: int = EXACT_MAX) -> None:
        self._pool = pool
        self.url = url
        self.exact_max = exact_max
        self._tables: set[int] = set()  # dimensions whose table is known to exist
        self._create_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, pool_size: int = 10, connect_timeout_s: float = 10.0,
                      exact_max: int = EXACT_MAX) -> PgVectorIndex:
        """Check (or create) the extension, then open the pool; raises ServiceUnavailable
        (VectorExtensionMissing when the server has no pgvector)."""
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=connect_timeout_s)
            try:
                await ensure_extension(conn, url)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=connect_timeout_s,
                command_timeout=30, init=_init_connection, server_settings=SERVER_SETTINGS)
        except _UNREACHABLE as e:
            raise ServiceUnavailableError(
                f"PostgreSQL (vectors) at {where(url)} is unreachable: {type(e).__name__}: {e}"
            ) from e
        except asyncpg.PostgresError as e:
            raise ServiceUnavailableError(
                f"PostgreSQL (vectors) at {where(url)} refused: {e}") from e
        return cls(pool, url, exact_max)

    async def _table(self, dim: int) -> str:
        name = f"{TABLE_PREFIX}{dim}"
        if dim in self._tables:
            return name
        async with self._create_lock, self._pool.acquire() as conn, conn.transaction():
            # Replicas starting together would race on CREATE ... IF NOT EXISTS (a unique
            # violation in the catalog); the advisory lock serialises them.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('watchllm_vectors'))")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} ("
                " namespace TEXT NOT NULL, id TEXT NOT NULL,"
                f" embedding vector({dim}) NOT NULL,"
                " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                " PRIMARY KEY (namespace, id))")
            if dim <= HNSW_MAX_DIM:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {name}_hnsw ON {name}"
                    " USING hnsw (embedding vector_cosine_ops)")
        self._tables.add(dim)
        return name

    async def add(self, namespace: str, id: str, vector: Sequence[float]) -> None:
        data = encode(vector)  # validate before touching the database
        table = await self._table(len(vector))
        await self._pool.execute(
            f"INSERT INTO {table} (namespace, id, embedding) VALUES ($1, $2, $3)"
            " ON CONFLICT (namespace, id) DO UPDATE"
            " SET embedding = EXCLUDED.embedding, created_at = now()",
            namespace, id, data)

    async def _all_tables(self) -> list[str]:
        """Every dimension's table, including those other replicas created."""
        rows = await self._pool.fetch(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r'"
            " AND c.relname LIKE $1 AND pg_table_is_visible(c.oid)",
            TABLE_PREFIX.replace("_", r"\_") + "%")
        return [str(r["relname"]) for r in rows]

    async def remove(self, namespace: str, id: str) -> bool:
        # Any dimension, as the in-process index; removal is rare (expired entries), so
        # asking the catalog each time costs nothing that matters.
        removed = False
        for table in await self._all_tables():
            status: str = await self._pool.execute(
                f'DELETE FROM "{table}" WHERE namespace = $1 AND id = $2', namespace, id)
            removed = removed or status != "DELETE 0"
        return removed

    async def search(self, namespace: str, vector: Sequence[float], k: int,
                     threshold: float) -> list[tuple[str, float]]:
        data = encode(vector)
        if k <= 0:
            return []
        table = await self._table(len(vector))
        rows = await self._pool.fetch(exact_sql(table, self.exact_max), data, namespace, k,
                                      threshold)
        if rows and rows[0]["id"] is None:  # a large namespace: HNSW
            rows = await self._pool.fetch(hnsw_sql(table), data, namespace, k, threshold)
        return [(r["id"], float(r["score"])) for r in rows]

    async def analyze(self) -> None:
        """What autovacuum does eventually, now (after a bulk load): planner statistics,
        and the visibility map that lets the size count read only the primary key."""
        for table in await self._all_tables():
            await self._pool.execute(f'VACUUM (ANALYZE) "{table}"')

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()



async def from_settings(settings: Settings) -> PgVectorIndex | None:
    """The self-hosted vector index per WATCHLLM_VECTOR_URL, or None (semantic cache off).

    Unset: the metadata database, if it has (or may create) pgvector; if not, start
    without the semantic cache, said once in the log. Set explicitly: it must work, or
    start-up fails naming the setting.
    """
    if settings.vector_url == "off":
        return None
    url = settings.vector_url or settings.database_url
    try:
        return await PgVectorIndex.connect(url, settings.pg_pool_size,
                                           settings.connect_timeout_s)
    except ServiceUnavailableError as e:
        if settings.vector_url:
            raise SettingsError(f"WATCHLLM_VECTOR_URL: {e.message}") from e
        if not isinstance(e, VectorExtensionMissing):
            raise
        log.warning("semantic cache off: %s; set WATCHLLM_VECTOR_URL to a database with "
                    "pgvector, or to off to silence this", e.message)
        return None
