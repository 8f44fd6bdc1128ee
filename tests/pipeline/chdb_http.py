"""A stand-in ClickHouse HTTP server backed by this process's chDB engine, for the
`http://` path of `ClickHouseAnalytics` (there is no ClickHouse server on these machines).

It answers clickhouse-connect's start-up queries and runs what the pipeline sends:
`INSERT INTO t (...) SETTINGS ... SELECT * FROM input('<structure>') FORMAT RowBinary`
with the rows as the request body. chDB has no request body to read `input()` from, so
the stand-in runs the same statement with `input(...)` replaced by a `file()` of the
body (the one substitution it makes); everything else - the statement, its settings, the
bytes - is what a server would get. Other statements run as they are.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_INPUT = re.compile(r"FROM input\(('(?:[^'\\]|\\.)*')\) FORMAT RowBinary$", re.S)


class ChdbHttpServer:
    """`with ChdbHttpServer(chdb_url) as url:` - `url` is `http://127.0.0.1:<port>`."""

    def __init__(self, chdb_url: str) -> None:
        from watchllm.env.selfhosted.clickhouse import open_client

        self.open_client = open_client
        self.chdb_url = chdb_url
        self.requests: list[tuple[str, bytes]] = []  # (statement, body) of each insert
        self._dir = tempfile.mkdtemp(prefix="watchllm-chhttp-")
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def run(self, query: str, body: bytes, database: str | None) -> bytes:
        if "version()" in query:  # clickhouse-connect's start-up query
            return b"26.9.2.1\tUTC\n"
        match = _INPUT.search(query)
        if not match:
            return b""  # other start-up queries: nothing to report
        with self._lock:  # one insert at a time: one file
            self.requests.append((query, body))
            path = os.path.join(self._dir, "body.bin")
            with open(path, "wb") as f:
                f.write(body)
            source = f"FROM file('{path}', 'RowBinary', {match.group(1)})"
            client = self.open_client(self.chdb_url, database)
            try:
                client.command(query[: match.start()] + source)
            finally:
                client.close()
        return b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = params.get("query", "")
                if not query:  # the statement is the body's first line, the rows follow
                    first, _, body = body.partition(b"\n")
                    query = first.decode(errors="replace")
                try:
                    out, status = standin.run(query, body, params.get("database")), 200
                except Exception as e:  # answer like ClickHouse: 500 with its own text
                    out, status = str(e).encode(), 500
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.send_header("X-ClickHouse-Summary", '{"written_rows":"0"}')
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST

        return Handler
