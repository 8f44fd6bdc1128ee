"""SqlDatabase on Cloudflare D1 (SQLite at the edge).

D1 speaks SQLite with `?` placeholders, so statements pass through unchanged. Results are
JS objects (`{results: [...], meta: {changes}}`) converted to Python once, here.
`transaction()` is one `batch()`: D1 runs a batch as a single SQL transaction and rolls
it back when any statement fails.

Reads are retried (twice, briefly) on D1's transient network errors, as Cloudflare advises
for idempotent queries; writes are not, since a lost answer may hide an applied write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from watchllm.env.base import Row
from watchllm.env.cloudflare._js import (
    IN_PYODIDE,
    JsException,
    error_text,
    js,
    js_value,
    to_py,
    unwrap,
)


class D1Error(RuntimeError):
    """D1 refused or failed a statement; the message carries D1's own text."""


# D1's transient failures (its docs) and a dropped connection to the D1 service.
_TRANSIENT = ("network connection lost", "fetch failed", "storage caused object to be reset",
              "internal error", "connection reset")
_READ_RETRIES_S = (0.05, 0.25)


def _transient(text: str) -> bool:
    lowered = text.lower()
    return any(t in lowered for t in _TRANSIENT)


def _param(value: Any) -> Any:
    # D1 binds null, number, string, boolean, ArrayBuffer; `undefined` is a D1_TYPE_ERROR.
    if isinstance(value, bool):
        return 1 if value else 0  # SQLite has no boolean; the other dialects read 0/1 too
    return js_value(value)


class D1Database:
    dialect = "d1"

    def __init__(self, binding: Any) -> None:
        self._db = unwrap(binding)

    def _stmt(self, sql: str, params: Sequence[Any]) -> Any:
        stmt = self._db.prepare(sql)
        return stmt.bind(*(_param(p) for p in params)) if params else stmt

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            result = to_py(await self._stmt(sql, params).run())
        except JsException as exc:
            raise D1Error(f"D1: {error_text(exc)}") from None
        return int((result.get("meta") or {}).get("changes") or 0)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        for delay in (*_READ_RETRIES_S, None):
            try:
                result = to_py(await self._stmt(sql, params).all())
                break
            except JsException as exc:
                text = error_text(exc)
                if delay is None or not _transient(text):
                    raise D1Error(f"D1: {text}") from None
                await asyncio.sleep(delay)
        rows = result.get("results") or []
        return [_row(r) for r in rows]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        if not statements:
            return
        stmts = [self._stmt(sql, params) for sql, params in statements]
        try:
            await self._db.batch(_js_array(stmts))
        except JsException as exc:
            raise D1Error(f"D1 batch: {error_text(exc)}") from None

    async def close(self) -> None:
        return None  # the binding belongs to the runtime


def _js_array(items: list[Any]) -> Any:
    """A JS array of JS objects (prepared statements must stay proxies, not be converted)."""
    if not IN_PYODIDE:
        return items
    arr = js.Array.new()
    for item in items:
        arr.push(item)
    return arr


def _row(row: Any) -> Row:
    # D1 returns BLOB columns as arrays of byte values; the schema has none, so rows are
    # str/int/float/None already. Integers beyond 2**53 would lose precision in JS.
    return dict(row)
