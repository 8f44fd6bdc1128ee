"""SqlDatabase on SQLite: one connection on one dedicated thread (SQLite serialises writes
anyway), so the event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from watchllm.env.base import Row

T = TypeVar("T")


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchllm-sqlite")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        return self._connect().execute(sql, tuple(params)).rowcount

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return [dict(r) for r in self._connect().execute(sql, tuple(params)).fetchall()]

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, tuple(params))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        result: int = await self._run(self._execute, sql, params)
        return result

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        result: list[Row] = await self._run(self._fetch, sql, params)
        return result

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        await self._run(self._transaction, statements)

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._pool.shutdown(wait=True)
