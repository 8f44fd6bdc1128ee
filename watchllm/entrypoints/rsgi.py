"""`watchllm.entrypoints.rsgi:app` — the same Gateway behind granian's native RSGI protocol.

The application stays ASGI (every ASGI server, and the Cloudflare bridge, runs it). Under
granian, RSGI is the cheaper way in: the body arrives as one awaited bytes object and a
whole response leaves in one synchronous call, instead of an awaited future per ASGI
message crossing granian's Rust/Python boundary. This module translates at that boundary:
an ASGI scope, a `receive` and a `send` per request, nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.settings import load_settings

_DISCONNECT = {"type": "http.disconnect"}


class _Exchange:
    """One request: ASGI receive/send over an RSGI protocol object."""

    __slots__ = ("headers", "proto", "received", "status", "stream")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.received = False
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.stream: Any = None

    async def receive(self) -> dict[str, Any]:
        if not self.received:
            self.received = True
            return {"type": "http.request", "body": await self.proto(), "more_body": False}
        await self.proto.client_disconnect()
        return _DISCONNECT

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in message.get("headers", ())]
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if self.stream is None:
                if not message.get("more_body", False):  # the whole response at once
                    self.proto.response_bytes(self.status, self.headers, body)
                    return
                self.stream = self.proto.response_stream(self.status, self.headers)
            if body:
                await self.stream.send_bytes(body)


class RSGIGateway:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # granian calls these in each worker around serving (the loop is not running yet /
    # any more): start-up, and on SIGTERM the drain and flush (ASGI's lifespan events).
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.gateway.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.gateway.shutdown())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        exchange = _Exchange(proto)
        asgi_scope = {
            "type": "http", "method": scope.method, "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in scope.headers.items()],
            "client": None, "scheme": scope.scheme, "http_version": scope.http_version,
        }
        await self.gateway(asgi_scope, exchange.receive, exchange.send)


app = RSGIGateway(Gateway(load_settings(), build_env))
