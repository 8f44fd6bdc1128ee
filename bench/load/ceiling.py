"""The ceiling of our stack: a granian ASGI app returning one fixed JSON body.

    python bench/load/ceiling.py PORT [--sched-batch]

`--sched-batch` runs it under SCHED_BATCH as `watchllm serve` runs the gateway
(watchllm/scheduling.py), for a like-for-like ceiling.
"""

from __future__ import annotations

import sys

BODY = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}'  # noqa: E501
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    if "--sched-batch" in sys.argv:
        sys.path.insert(0, __file__.rsplit("/", 3)[0])
        from watchllm.scheduling import batch_scheduling

        batch_scheduling()
    Granian("ceiling:app", address="127.0.0.1", port=int(sys.argv[1]), interface=Interfaces.ASGI,
            loop=Loops.uvloop, runtime_mode=RuntimeModes.st, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]
