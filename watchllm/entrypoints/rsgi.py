"""`watchllm.entrypoints.rsgi:app` — the same Gateway behind granian's native RSGI protocol.

The application stays ASGI (every ASGI server, and the Cloudflare bridge, runs it). Under
granian, RSGI is the cheaper way in: the body arrives as one awaited bytes object and a
whole response leaves in one synchronous call, instead of an awaited future per ASGI
message crossing granian's Rust/Python boundary. This module translates at that boundary:
an ASGI scope, a `receive` and a `send` per request.

One shortcut: a repeated request that the gateway remembers answering from the cache
(`watchllm/proxy/hot.py`) is answered here, without building the ASGI exchange, through
the same checks (`routes.proxy.remembered`) and the same bookkeeping (`routes.proxy.finish`:
metrics, the event). Anything else — and any doubt — takes the full path with the body
already read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

from watchllm.app import Gateway, new_request_id
from watchllm.cache.controls import HEADER_NAMES
from watchllm.entrypoints.factory import build_env
from watchllm.http.asgi import bearer_token
from watchllm.proxy.context import ProxyContext
from watchllm.routes.proxy import ENDPOINTS, finish, remembered
from watchllm.settings import load_settings

_DISCONNECT = {"type": "http.disconnect"}
_CONTROLS = tuple(h.decode() for h in HEADER_NAMES)


class _Exchange:
    """One request: ASGI receive/send over an RSGI protocol object."""

    __slots__ = ("body", "headers", "proto", "received", "status", "stream")

    def __init__(self, proto: Any, body: bytes | None = None) -> None:
        self.proto = proto
        self.body = body  # already read (by the shortcut)
        self.received = False
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.stream: Any = None

    async def receive(self) -> dict[str, Any]:
        if not self.received:
            self.received = True
            body = self.body if self.body is not None else await self.proto()
            return {"type": "http.request", "body": body, "more_body": False}
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
        body = None
        if scope.method == "POST" and self.gateway.started:
            endpoint = ENDPOINTS.get(scope.path)
            if endpoint is not None:
                answered, body = await self._remembered(scope.headers, proto, endpoint)
                if answered:
                    return
        exchange = _Exchange(proto, body)
        asgi_scope = {
            "type": "http", "method": scope.method, "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in scope.headers.items()],
            "client": None, "scheme": scope.scheme, "http_version": scope.http_version,
        }
        await self.gateway(asgi_scope, exchange.receive, exchange.send)


    async def _remembered(self, headers: Any, proto: Any,
                          endpoint: str) -> tuple[bool, bytes | None]:
        """(True, _) when a remembered repeat was answered; else (False, the body if it was
        read) for the full path."""
        gw = self.gateway
        if any(h in headers for h in _CONTROLS):
            return False, None
        length = headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > gw.settings.max_body_bytes:
            return False, None  # the full path reads (and bounds) it
        token = bearer_token(headers.get("authorization"), headers.get("x-api-key"),
                             headers.get("api-key"))
        principal = gw.auth.cached(token) if token else None
        if principal is None or not principal.allows("proxy"):
            return False, None
        body: bytes = await proto()
        hot = gw.hot.get((principal.key_id, endpoint, body))
        if hot is None:
            return False, body
        ctx = ProxyContext(headers.get("x-request-id") or new_request_id(), endpoint)
        ctx.project_id, ctx.key_id = principal.project_id, principal.key_id
        gw.begin()
        try:
            try:
                if not await remembered(gw, ctx, principal, hot, admit=False):
                    return False, body
            except Exception:  # the full path meets the problem again, and reports it
                return False, body
            proto.response_bytes(200, [
                ("x-request-id", ctx.request_id),
                ("x-watchllm-latency-ms", f"{ctx.elapsed_ms():.2f}"),
                ("age", str(max(0, int(time.time() - hot.created)))),
                *hot.text_headers], hot.body)
            ctx.ttft_s = ctx.elapsed_ms() / 1000
            await finish(gw, ctx)
            return True, None
        finally:
            gw.end()


app = RSGIGateway(Gateway(load_settings(), build_env))
