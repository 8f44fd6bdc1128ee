"""The gateway's transport without its features: what a pass-through costs on our stack.

    python bench/load/lean_passthrough.py PORT UPSTREAM_BASE_URL [--sched-batch]

A minimal RSGI app on granian (uvloop, one worker) that sends every request on to the
same path of the upstream with the gateway's own HTTP client (`watchllm.env.http_lean`)
and answers the way the gateway's RSGI entry does: a whole body in one `response_bytes`;
an SSE body piped (`_Response.pipe`), each read's chunk written from the read's callback
through granian's stream send, and a stream that came in one read answered at once.
Nothing else: no auth, no validation, no routing, no events, no usage scan, no headers
of ours. `--sched-batch` runs it under SCHED_BATCH as `watchllm serve` runs the gateway,
and its garbage collector is set as the gateway's is.

Measured beside the gateway and issue 2's yardstick (`ab.py --lean`), it splits what a
request costs into the transport (this) and the features (the gateway minus this), for
plain requests and for streams alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm.app import _settle_gc
from watchllm.env.http_lean import LeanHttpClient

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "")  # the workers import this afresh
_client: LeanHttpClient | None = None


async def app(scope: Any, proto: Any) -> None:
    global _client
    if scope.proto != "http":
        return
    if _client is None:
        _client = LeanHttpClient(256)
        _settle_gc()  # as the gateway does at start-up: else the GC runs for a stream's
        # short-lived containers (~6 µs a stream here), which the gateway does not pay
    body = await proto()
    headers = {"content-type": "application/json"}
    if (auth := scope.headers.get("authorization")) is not None:
        headers["authorization"] = auth
    resp = await _client.request(scope.method, UPSTREAM + scope.path, headers, body,
                                 connect_timeout=10.0, read_timeout=60.0)
    out = [("content-type", resp.headers.get("content-type", "application/json"))]
    if not out[0][1].startswith("text/event-stream"):
        proto.response_bytes(resp.status, out, await resp.read())
        return
    transport: Any = None
    status = resp.status  # (push must not hold resp, which holds push: a cycle per stream)

    def push(chunk: bytes, more: bool) -> None:  # what the gateway's RSGI entry does
        nonlocal transport
        if transport is None:
            if not more:  # the whole stream came in one read
                proto.response_bytes(status, out, chunk)
                return
            transport = proto.response_stream(status, out)
        if chunk:
            transport.send_bytes(chunk)  # queued at once; the awaitable it returns is done
        if not more:
            transport = None  # granian ends the body when the transport is freed

    await resp.pipe(push)


if __name__ == "__main__":
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    if "--sched-batch" in sys.argv:
        from watchllm.scheduling import batch_scheduling

        batch_scheduling()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["PASSTHROUGH_UPSTREAM"] = sys.argv[2].rstrip("/")
    Granian("lean_passthrough:app", address="127.0.0.1", port=int(sys.argv[1]),
            interface=Interfaces.RSGI, loop=Loops.uvloop, runtime_mode=RuntimeModes.st,
            log_access=False, log_level="warning").serve()  # type: ignore[arg-type]
