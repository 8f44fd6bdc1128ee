"""What a streamed response costs granian itself: the floor under issue 2's streaming target.

    .venv/bin/python bench/load/stream_floor.py [--seconds 5] [--rounds 2]

A minimal RSGI app (no gateway code) answers every request three ways, one server per way,
each pinned to core 0 with `hey -c 50` on core 1: the whole body at once
(`response_bytes`), the same SSE bytes as a stream in one piece, and as a stream of 10
pieces. Printed: requests/s and server CPU per request of each, interleaved round by round.
The gateway answers a stream that arrived in one read at once (`response_bytes`); one that
arrives in pieces pays the stream's cost.

    python bench/load/stream_floor.py --serve PORT MODE   (internal: one server)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EVENTS = [b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
          b'"delta":{"content":"tok%d"}}]}\n\n' % i for i in range(9)] + [b"data: [DONE]\n\n"]
BODY = b"".join(EVENTS)
MODES = {"bytes": "whole body (response_bytes)", "one": "stream, 1 piece",
         "pieces": "stream, 10 pieces"}


def make_app(mode: str) -> Any:
    headers = [("content-type", "text/event-stream")]

    async def app(scope: Any, proto: Any) -> None:
        await proto()
        if mode == "bytes":
            proto.response_bytes(200, headers, BODY)
            return
        transport = proto.response_stream(200, headers)
        for piece in (BODY,) if mode == "one" else EVENTS:
            await transport.send_bytes(piece)

    return app


app = make_app(os.environ.get("WATCHLLM_FLOOR_MODE", "bytes"))  # what granian imports


def serve(port: int, mode: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    os.environ["WATCHLLM_FLOOR_MODE"] = mode  # read by the worker's import of this module
    Granian("stream_floor:app", address="127.0.0.1", port=port, interface=Interfaces.RSGI,
            loop=Loops.uvloop, runtime_mode=RuntimeModes.st, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    from run import hey, measured

    from watchllm.testing.servers import free_port, start

    tmp = Path(tempfile.mkdtemp(prefix="watchllm-floor-"))
    body = tmp / "body.json"
    body.write_text("{}")
    servers = {}
    try:
        for mode in MODES:
            port = free_port()
            servers[mode] = start([__file__, "--serve", str(port), mode], {}, port,
                                  tmp / f"{mode}.log", "/", cpu=0)
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, server in servers.items():
                runs[mode].append(measured(server, lambda s=server: hey(
                    s.url + "/", args.seconds, body, {})))
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n`{' '.join(sys.argv)}`: medians of {args.rounds} rounds of {args.seconds} s\n")
    print("| response | requests/s | server CPU µs/request |")
    print("| --- | ---: | ---: |")
    for mode, rows in runs.items():
        rps = statistics.median(r["rps"] for r in rows)
        cpu = statistics.median(r["cpu_ms_per_req"] for r in rows) * 1000
        print(f"| {MODES[mode]} | {rps:,.0f} | {cpu:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
