"""An HttpClient that answers like ClickHouse's HTTP interface, backed by chDB: the
Workers adapter (`ClickHouseHttp`) then runs the Analytics contract on the real engine.

It reads what the interface reads: `query` (or the body) as SQL, `param_<name>` as bound
parameters, any other URL parameter as a setting, `x-clickhouse-database`; an INSERT's
body is its data — for `… SELECT FROM input('<structure>') FORMAT RowBinary` too, run as
the same statement over a `file()` of the body (chDB has no request body for `input()`).
Errors answer 500 with ClickHouse's own text ("Code: N. ...")."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_INSERT = re.compile(r"^INSERT INTO (\w+) \((.*)\) FORMAT RowBinary$", re.S)
_FORMAT = "\nFORMAT JSONEachRow"
_INPUT = re.compile(r"FROM input\(('(?:[^'\\]|\\.)*')\) FORMAT RowBinary$", re.S)


class Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {}
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def ended(self) -> bool:
        return True

    def close(self) -> None:
        return None


class ChdbHttp:
    """HttpClient for `ClickHouseHttp(ChdbHttp(chdb_url), "http://user:pw@ch/<db>")`."""

    def __init__(self, chdb_url: str) -> None:
        from watchllm.env.selfhosted.clickhouse import open_client

        self.url = chdb_url
        self.open_client = open_client
        self.requests: list[tuple[str, dict[str, str]]] = []  # (query, settings)

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None, *, connect_timeout: float,
                      read_timeout: float) -> Response:
        fields = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        query = fields.pop("query", "")
        params = {k[6:]: v for k, v in fields.items() if k.startswith("param_")}
        settings = {k: v for k, v in fields.items() if not k.startswith("param_")}
        self.requests.append((query, settings))
        client = self.open_client(self.url, headers.get("x-clickhouse-database"))
        try:
            return Response(200, self._run(client, query, params, settings, body or b""))
        except Exception as e:
            return Response(500, str(e).encode())
        finally:
            client.close()

    @staticmethod
    def _run(client: Any, query: str, params: dict[str, str], settings: dict[str, str],
             body: bytes) -> bytes:
        source = _INPUT.search(query)
        if source:
            fd, path = tempfile.mkstemp(suffix=".bin")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                client.command(query[: source.start()]
                               + f"FROM file('{path}', 'RowBinary', {source.group(1)})",
                               settings=settings)
            finally:
                os.unlink(path)
            return b""
        insert = _INSERT.match(query)
        if insert:
            columns = [c.strip(" `") for c in insert.group(2).split(",")]
            client.raw_insert(insert.group(1), columns, body, settings=settings,
                              fmt="RowBinary")
            return b""
        sql = query + body.decode()
        if sql.endswith(_FORMAT):
            result: bytes = client.raw_query(sql.removesuffix(_FORMAT), parameters=params,
                                             settings=settings, fmt="JSONEachRow")
            return result
        client.command(sql, settings=settings)
        return b""

    async def close(self) -> None:
        return None
