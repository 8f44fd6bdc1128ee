"""The issue's yardstick for a gateway's cost: a featureless granian + aiohttp pass-through.

    python bench/load/aiohttp_passthrough.py PORT UPSTREAM_BASE_URL

Every request is sent on to the same path of the upstream with one pooled aiohttp
session, and its status, content type and body come back; an SSE body (streaming) is
forwarded piece by piece as it arrives, the way a streaming pass-through must. Nothing
else: no auth, no validation, no events, no limits. Issue 2 gives its cost "on this
machine" (0.22 ms of CPU per request) as the scale for the gateway's ≤ 0.2 ms target; run
beside the gateway in `bench/load/run.py`, it scales that target to the machine's speed at
the time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import aiohttp

# The workers import this module afresh: the upstream reaches them in the environment.
UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "")
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] != "http":
        return
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
               if k in (b"content-type", b"authorization")}
    async with _session.request(scope["method"], UPSTREAM + scope["path"], data=body,
                                headers=headers) as resp:
        content_type = resp.headers.get("content-type", "application/json")
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", content_type.encode("latin-1"))]})
        if content_type.startswith("text/event-stream"):
            async for piece in resp.content.iter_any():  # what each read brought
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await resp.read()
    await send({"type": "http.response.body", "body": data})


if __name__ == "__main__":
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    os.environ["PASSTHROUGH_UPSTREAM"] = sys.argv[2].rstrip("/")
    Granian("aiohttp_passthrough:app", address="127.0.0.1", port=int(sys.argv[1]),
            interface=Interfaces.ASGI, loop=Loops.uvloop, runtime_mode=RuntimeModes.st,
            log_access=False, log_level="warning").serve()  # type: ignore[arg-type]
