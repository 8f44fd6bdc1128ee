"""SqlDatabase on PostgreSQL (asyncpg): a connection pool of configurable size.

The seam speaks `?` placeholders; `to_dollar` rewrites them to `$1, $2...` outside string
literals, quoted identifiers and comments (cached per statement text). Failures to reach
the server become `ServiceUnavailableError` naming the host (never the password), so
`/ready` and the CLI say what is wrong instead of printing a socket traceback.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from watchllm.env.base import Row
from watchllm.errors import ServiceUnavailableError

_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\?""", re.S)
_COUNT = re.compile(r"(\d+)$")


@lru_cache(maxsize=1024)
def to_dollar(sql: str) -> str:
    """`?` placeholders to PostgreSQL's `$n`, leaving literals and comments alone."""
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        if m.group(0) != "?":
            return m.group(0)
        n += 1
        return f"${n}"

    return _TOKENS.sub(sub, sql)


def where(url: str) -> str:
    """host:port/db of a URL, without credentials (for messages)."""
    p = urlsplit(url)
    return f"{p.hostname or 'localhost'}:{p.port or 5432}{p.path or ''}"


_UNREACHABLE = (OSError, asyncio.TimeoutError)


def _unavailable(url: str, e: BaseException) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"PostgreSQL at {where(url)} is unreachable: {type(e).__name__}: {e}".rstrip(": ")
    )


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, pool: Any, url: str) -> None:
        self._pool = pool
        self.url = url

    @classmethod
    async def connect(
        cls, url: str, pool_size: int = 10, connect_timeout_s: float = 10.0
    ) -> PostgresDatabase:
        import asyncpg

        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=connect_timeout_s,
                command_timeout=60,
            )
        except _UNREACHABLE as e:
            raise _unavailable(url, e) from e
        except asyncpg.PostgresError as e:  # bad password, missing database...
            raise ServiceUnavailableError(f"PostgreSQL at {where(url)} refused: {e}") from e
        return cls(pool, url)

    async def _call(self, method: str, sql: str, params: Sequence[Any]) -> Any:
        try:
            async with self._pool.acquire() as conn:
                return await getattr(conn, method)(to_dollar(sql), *params)
        except _UNREACHABLE as e:
            raise _unavailable(self.url, e) from e

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status: str = await self._call("execute", sql, params)
        m = _COUNT.search(status or "")
        return int(m.group(1)) if m and not status.startswith("SELECT") else 0

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(r) for r in await self._call("fetch", sql, params)]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = await self._call("fetchrow", sql, params)
        return dict(row) if row is not None else None

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for sql, params in statements:
                    await conn.execute(to_dollar(sql), *params)
        except _UNREACHABLE as e:
            raise _unavailable(self.url, e) from e

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1 AS ok")

    async def close(self) -> None:
        await self._pool.close()
