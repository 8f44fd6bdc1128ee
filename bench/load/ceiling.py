"""The ceiling of our stack: a granian ASGI app returning one fixed JSON body.

    python bench/load/ceiling.py PORT [--sched-batch] [--rsgi-read]

`--sched-batch` runs it under SCHED_BATCH as `watchllm serve` runs the gateway
(watchllm/scheduling.py), for a like-for-like ceiling. `--rsgi-read` serves the same
answer through granian's RSGI interface, as the gateway does, after reading the request
body, as a cache hit must (it keys the cache): the floor of any hit path of ours, to tell
the stack's share of a hit's cost from our code's.
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


class ReadingRSGIApp:
    TEXT_HEADERS = [("content-type", "application/json")]

    async def __rsgi__(self, scope, proto):  # type: ignore[no-untyped-def]
        await proto()  # the whole body, as the gateway's hit path reads it
        proto.response_bytes(200, self.TEXT_HEADERS, BODY)


rsgi_app = ReadingRSGIApp()


if __name__ == "__main__":
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    if "--sched-batch" in sys.argv:
        sys.path.insert(0, __file__.rsplit("/", 3)[0])
        from watchllm.scheduling import batch_scheduling

        batch_scheduling()
    rsgi = "--rsgi-read" in sys.argv
    Granian("ceiling:rsgi_app" if rsgi else "ceiling:app", address="127.0.0.1",
            port=int(sys.argv[1]), interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
            loop=Loops.uvloop, runtime_mode=RuntimeModes.st, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]
