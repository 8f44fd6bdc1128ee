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

import os
import sys
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


if __name__ == "__main__":
    import minimal_rsgi  # bench/load/minimal_rsgi.py

    minimal_rsgi.run(__file__, "WATCHLLM_FLOOR_MODE", MODES, seconds=5, rounds=2)
