"""A stand-in ClickHouse HTTP endpoint for bench/micro/run.py: answers
clickhouse-connect's start-up queries and accepts any INSERT body (discarded, bytes
counted; `SELECT bytes_received` returns the count), so the client's own CPU per
inserted row can be measured without a server. Run: fake_clickhouse.py PORT [--idle]

`--idle` runs it under SCHED_IDLE: the load benches share its core with the load
generator, and a stand-in for a ClickHouse on another machine must not delay the
generator's requests (and so inflate the latency it measures).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

received = {"bytes": 0, "inserts": 0}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: object) -> None:
        pass

    def _body(self) -> tuple[bytes, int]:
        head, n = b"", 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunk = self.rfile.read(size)
                self.rfile.readline()
                n += len(chunk)
                head = head or chunk[:200]
            return head, n
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return data[:200], len(data)

    def do_POST(self) -> None:
        q = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        head, n = self._body()
        if not q:
            q = head.decode(errors="replace")
        if "version()" in q:
            out = b"26.9.2.1\tUTC\n"
        elif q.startswith("INSERT") or self.headers.get("Content-Encoding"):
            # A compressed body carries the INSERT statement inside it.
            received["bytes"] += n
            received["inserts"] += 1
            out = b""
        elif "bytes_received" in q:
            out = f"{received['bytes']}\t{received['inserts']}\n".encode()
        else:
            out = b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-ClickHouse-Summary", '{"written_rows":"0"}')
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST


if __name__ == "__main__":
    if "--idle" in sys.argv:
        import os

        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
