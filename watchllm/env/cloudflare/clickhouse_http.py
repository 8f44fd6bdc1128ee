"""Analytics over ClickHouse's HTTP interface, through the HttpClient seam.

On Workers there is no clickhouse-connect (no sockets, no threads): inserts are one POST
of RowBinary, queries one POST answered as JSONEachRow. Tables of the events schema are
inserted with the statement the self-hosted adapter sends (`INSERT … SELECT FROM
input('<plain types>') FORMAT RowBinary`, built by `clickhouse_schema.insert_select`: the
server parses LowCardinality columns as plain strings, 2-4 times faster); other tables
with `INSERT INTO t (cols) FORMAT RowBinary`. The URL is
`http(s)://user:password@host:port/database`; credentials travel as
X-ClickHouse-User/-Key headers, never in the query string.

Errors follow the self-hosted adapter's split, which the queue consumer relies on:
`InsertRejected` (ValueError: ClickHouse refused the data; retrying cannot help) and
`AnalyticsUnavailable` (ConnectionError: down, overloaded, misconfigured; retry later).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from watchllm.env.base import HttpClient, Row
from watchllm.events.clickhouse_schema import input_source, insert_select
from watchllm.events.schema import TABLES

# ClickHouse error codes that mean "this data is bad" (as in env/selfhosted/clickhouse.py).
_DATA_ERRORS = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 349, 469}
_CODE = re.compile(r"Code: (\d+)")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InsertRejected(ValueError):
    """ClickHouse rejected the rows themselves (parse error, constraint)."""


class AnalyticsUnavailable(ConnectionError):
    """ClickHouse could not take the request now."""


class ClickHouseHttp:
    def __init__(self, http: HttpClient, url: str, *, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ClickHouse URL must be http(s)://host[:port]/db, got {url!r}")
        self.http = http
        self.timeout_s = timeout_s
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base = f"{parts.scheme}://{netloc}/"
        self.database = parts.path.strip("/") or None
        self.headers: dict[str, str] = {}
        if parts.username:
            self.headers["x-clickhouse-user"] = unquote(parts.username)
        if parts.password:
            self.headers["x-clickhouse-key"] = unquote(parts.password)
        if self.database:
            self.headers["x-clickhouse-database"] = self.database

    async def _post(self, query: str, body: bytes, params: Mapping[str, Any] | None = None,
                    content_type: str = "application/octet-stream",
                    settings: Mapping[str, Any] | None = None) -> bytes:
        qs = "query=" + quote(query)
        for k, v in (params or {}).items():
            qs += f"&param_{quote(k)}={quote(str(v))}"
        for k, v in (settings or {}).items():
            qs += f"&{quote(k)}={quote(str(v), safe='')}"
        headers = {**self.headers, "content-type": content_type}
        try:
            resp = await self.http.request("POST", self.base + "?" + qs, headers, body,
                                           connect_timeout=self.timeout_s,
                                           read_timeout=self.timeout_s)
            data = await resp.read()
        except (OSError, TimeoutError) as exc:
            raise AnalyticsUnavailable(f"ClickHouse unreachable: {exc}") from exc
        if resp.status == 200:
            return data
        text = data.decode(errors="replace").strip()
        message = text.splitlines()[0][:500] if text else f"HTTP {resp.status}"
        code = _CODE.search(text)
        if code and int(code.group(1)) in _DATA_ERRORS:
            raise InsertRejected(message)
        raise AnalyticsUnavailable(f"ClickHouse answered {resp.status}: {message}")

    async def insert_rowbinary(
        self, table: str, columns: Sequence[str], data: bytes, dedup_token: str | None = None
    ) -> None:
        for name in (table, *columns):
            if not _NAME.match(name):
                raise InsertRejected(f"not a plain identifier: {name!r}")
        settings: dict[str, Any] = {}
        if dedup_token is not None:  # as env/selfhosted/clickhouse.py's dedup_settings
            settings = {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token,
                        "deduplicate_blocks_in_dependent_materialized_views": 1}
        types = dict(TABLES.get(table, ()))
        if types and all(c in types for c in columns):
            typed = [(c, types[c]) for c in columns]
            sql = insert_select(table, typed, input_source(typed), settings)
            await self._post(sql + " FORMAT RowBinary", data)
            return
        cols = ", ".join(f"`{c}`" for c in columns)
        await self._post(f"INSERT INTO {table} ({cols}) FORMAT RowBinary", data,
                         settings=settings or None)

    async def command(self, sql: str) -> None:
        """A statement without a result (DDL)."""
        await self._post("", sql.encode(), content_type="text/plain; charset=utf-8")

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        # The query travels in the body (no URL length limit); parameters in the URL.
        data = await self._post("", (sql + "\nFORMAT JSONEachRow").encode(), params,
                                "text/plain; charset=utf-8")
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    async def close(self) -> None:
        return None
