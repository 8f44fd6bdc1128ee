"""Time to first byte of a stream, through the gateway and directly, side by side.

    .venv/bin/python bench/load/ttfb.py [--requests 300] [--latency-ms 10] [--chunk-ms 2]

Issue 2: a stream's time to first byte through WatchLLM stays within 1 ms of direct. The
scripted mock upstream (core 1) waits `--latency-ms` before it answers (a model's time to
first token), then sends its chunks `--chunk-ms` apart; the gateway (one worker, core 0,
the embedded default, caching off) forwards them. One client on core 1 sends one request
at a time over a kept-alive connection to each, alternating between them, and times from
the request's first byte sent to the first `data:` of the answer (TTFB) and to the
answer's last byte. Not a load test: no request waits behind another. For scale, the same
is timed through issue 2's yardstick (granian + aiohttp, no features) and through the
gateway's own transport without its features (`lean_passthrough.py`), both on core 0.
`--awake`: a SCHED_IDLE spinner keeps core 0 from idling (a machine with other work, or no
deep idle states), so that an idle core's wake-up is not part of the reading: the client
and the mock share core 1, which the client keeps awake, so direct never pays it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BODY, make_key, pct

from watchllm.testing.servers import (
    Server,
    free_port,
    start,
    start_gateway,
    start_mock_upstream,
)

HERE = Path(__file__).resolve().parent
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body


class Client:
    """One kept-alive HTTP/1.1 connection; `stream()` times one streamed answer."""

    def __init__(self, port: int, headers: dict[str, str], body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                        f"{head}\r\n").encode() + body

    def stream(self) -> tuple[float, float]:
        """(ms to the first event, ms to the last byte) of one answer."""
        buf = b""
        first = 0.0
        started = time.perf_counter()
        self.sock.sendall(self.request)
        checked = False
        while not buf.endswith(END):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            buf += data
            if not checked and b"\r\n\r\n" in buf:
                # Anything but a streamed 200 (an error's JSON has a length, not chunks)
                # would leave this loop waiting for a last chunk that never comes.
                if not buf.startswith(b"HTTP/1.1 200 "):
                    raise RuntimeError(buf[:300].decode(errors="replace"))
                checked = True
            if not first and b"data:" in buf:
                first = time.perf_counter()
        return (first - started) * 1e3, (time.perf_counter() - started) * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=300, help="per target")
    p.add_argument("--latency-ms", type=float, default=10.0)
    p.add_argument("--chunk-ms", type=float, default=2.0)
    p.add_argument("--awake", action="store_true", help="keep core 0 from idling")
    p.add_argument("--gateway-only", action="store_true",
                   help="no yardstick or transport on core 0 between the gateway's requests")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})  # the client beside the mock, off the gateway's core
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-ttfb-"))
    mock = start_mock_upstream(tmp, cpu=1)
    gw = start_gateway(tmp / "gw", {"OPENAI_BASE_URL": f"{mock.url}/v1",
                                    "OPENAI_API_KEY": "sk-bench", "WATCHLLM_ADMIN_KEY": "a",
                                    "WATCHLLM_LOG_LEVEL": "warning"}, cpu=0)
    refs: dict[str, Server] = {}
    body = json.dumps({**BODY, "stream": True, "mock": {
        "latency_ms": args.latency_ms, "chunk_delay_ms": args.chunk_ms}}).encode()
    try:
        for name, script in () if args.gateway_only else (
                ("yardstick (granian + aiohttp)", "aiohttp_passthrough.py"),
                ("transport alone (lean)", "lean_passthrough.py")):
            port = free_port()
            refs[name] = start([str(HERE / script), str(port), mock.url], {}, port,
                               tmp / f"{script}.log", "/_mock/stats", cpu=0)
        auth = {"authorization": f"Bearer {make_key(gw, 'a')}", "x-watchllm-cache-mode": "off"}
        clients = {"direct": Client(mock.port, {}, body),
                   "gateway": Client(gw.port, auth, body),
                   **{name: Client(ref.port, {}, body) for name, ref in refs.items()}}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        spinner = subprocess.Popen(["taskset", "-c", "0", "chrt", "-i", "0", sys.executable,
                                    "-c", "while True: pass"]) if args.awake else None
        try:
            for _ in range(20):  # warm-up: connections, the gateway's caches and upstream pool
                for c in clients.values():
                    c.stream()
            for _ in range(args.requests):
                for name, c in clients.items():
                    times[name].append(c.stream())
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    finally:
        for server in (gw, *refs.values(), mock):
            server.stop()
    print(f"\n`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M')}; upstream: "
          f"{args.latency_ms:g} ms to its first event, then one every {args.chunk_ms:g} ms"
          + ("; core 0 kept awake" if args.awake else "") + "\n")
    print("| target | TTFB p50 ms | p90 | p99 | last byte p50 ms | p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, ts in times.items():
        first, last = [t[0] for t in ts], [t[1] for t in ts]
        print(f"| {name} | {statistics.median(first):.2f} | {pct(first, 0.9):.2f} | "
              f"{pct(first, 0.99):.2f} | {statistics.median(last):.2f} | {pct(last, 0.99):.2f} |")
    d = [t[0] for t in times["direct"]]
    print()
    for name in (n for n in times if n != "direct"):
        g = [t[0] for t in times[name]]
        print(f"added time to first byte, {name}: p50 "
              f"{statistics.median(g) - statistics.median(d):+.2f} ms, p90 "
              f"{pct(g, 0.9) - pct(d, 0.9):+.2f} ms, p99 {pct(g, 0.99) - pct(d, 0.99):+.2f} ms"
              + (" (issue 2: within 1 ms of direct)" if name == "gateway" else ""))


if __name__ == "__main__":
    main()
