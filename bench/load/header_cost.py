"""What six more response headers cost at the server: the floor under the limits' cost
when the upstream sends no `x-ratelimit-*` headers of its own (issue 7).

    .venv/bin/python bench/load/header_cost.py [--seconds 2] [--rounds 6]

A minimal RSGI app (no gateway code) answers every request with the same JSON body, one
server per way, each pinned to core 0 with `hey -c 50` on core 1: with two headers (a
content type and a request id, as the gateway without limits sends at the least); with
the six `x-ratelimit-*` headers more, as str (granian's own cost); and with the six made
as the gateway makes them (bytes values per request, decoded to str as its RSGI adapter
does). Printed: requests/s and server CPU per request, medians of interleaved rounds.

    python bench/load/header_cost.py --serve PORT MODE   (internal: one server)
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BODY = (b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":'
        b'{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}')
MODES = {"base": "2 headers", "str": "+ 6 x-ratelimit-* (str)",
         "decoded": "+ 6 x-ratelimit-* (bytes made and decoded per request)"}
_UNITS = ("requests", "tokens")


def make_app(mode: str) -> Any:
    count = itertools.count()

    async def app(scope: Any, proto: Any) -> None:
        await proto()
        n = next(count)
        headers = [("content-type", "application/json"), ("x-request-id", f"req_{n:016x}")]
        if mode == "str":
            for unit in _UNITS:
                headers += [(f"x-ratelimit-limit-{unit}", "100000000"),
                            (f"x-ratelimit-remaining-{unit}", str(99_999_999 - n)),
                            (f"x-ratelimit-reset-{unit}", "1ms")]
        elif mode == "decoded":
            raw = []
            for unit in _UNITS:
                raw += [(b"x-ratelimit-limit-" + unit.encode(), b"100000000"),
                        (b"x-ratelimit-remaining-" + unit.encode(), b"%d" % (99_999_999 - n)),
                        (b"x-ratelimit-reset-" + unit.encode(), b"1ms")]
            headers += [(k.decode(), v.decode()) for k, v in raw]
        proto.response_bytes(200, headers, BODY)

    return app


app = make_app(os.environ.get("WATCHLLM_HEADER_MODE", "base"))  # what granian imports


if __name__ == "__main__":
    import minimal_rsgi  # bench/load/minimal_rsgi.py

    minimal_rsgi.run(__file__, "WATCHLLM_HEADER_MODE", MODES, seconds=2, rounds=6)
