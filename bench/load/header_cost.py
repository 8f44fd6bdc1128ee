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

import argparse
import itertools
import os
import statistics
import sys
import tempfile
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


def serve(port: int, mode: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    os.environ["WATCHLLM_HEADER_MODE"] = mode  # read by the worker's import of this module
    Granian("header_cost:app", address="127.0.0.1", port=port, interface=Interfaces.RSGI,
            loop=Loops.uvloop, runtime_mode=RuntimeModes.st, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    from run import hey, measured

    from watchllm.testing.servers import free_port, start

    tmp = Path(tempfile.mkdtemp(prefix="watchllm-headers-"))
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
