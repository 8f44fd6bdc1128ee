"""`watchllm.entrypoints.rsgi:app` — the same Gateway behind granian's native RSGI protocol.

The application stays ASGI (every ASGI server, and the Cloudflare bridge, runs it). Under
granian, RSGI is the cheaper way in: the body arrives as one awaited bytes object and a
whole response leaves in one synchronous call, instead of an awaited future per ASGI
message crossing granian's Rust/Python boundary. This module translates at that boundary:
an ASGI scope, a `receive` and a `send` per request.

One shortcut: a repeated request that the gateway remembers answering from the cache
(`watchllm/proxy/hot.py`) is answered here, without building the ASGI exchange or a
ProxyContext, through the same checks (`routes.proxy.still_current`) and the bookkeeping
`routes.proxy.finish` does for a hit (metrics, the event from the memo's template). A
limited caller, anything else, and any doubt take the full path with the body already
read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

from watchllm import metrics
from watchllm.app import Gateway, new_request_id
from watchllm.auth import Principal
from watchllm.cache.controls import HEADER_NAMES
from watchllm.cache.entry import age_s
from watchllm.entrypoints.factory import build_env
from watchllm.http.asgi import BODY_PUSH, Request, bearer_token
from watchllm.proxy.context import replayed_event
from watchllm.proxy.hot import HotRequest
from watchllm.routes.proxy import ENDPOINTS, still_current, still_current_now
from watchllm.settings import load_settings

_DISCONNECT = {"type": "http.disconnect"}
_ENDED = object()  # a stream that was sent and freed
_CONTROLS = tuple(h.decode() for h in HEADER_NAMES)
_sent_type: type | None = None  # what granian's stream send returns for "queued"


def _settle(awaitable: Any) -> None:
    """Drive a stream send's awaitable, which granian hands back done: it raises granian's
    RSGIProtocolClosed (a RuntimeError) when the client is gone. The first that completes
    at once gives the type later ones are checked against, without driving them."""
    global _sent_type
    try:
        awaitable.__await__().__next__()
    except StopIteration:
        _sent_type = type(awaitable)
        return
    raise RuntimeError("granian's stream send did not complete at once")


class _Exchange:
    """One request: ASGI receive/send over an RSGI protocol object."""

    __slots__ = ("body", "chunks", "done", "headers", "one_read", "proto", "received",
                 "status", "stream")

    def __init__(self, proto: Any, body: bytes | None, one_read: bool) -> None:
        self.proto = proto
        self.body = body  # already read (by the shortcut)
        # A body of declared, bounded length is read in one call; any other (chunked) is
        # read piece by piece, so the app's size limit stops it before it is all in memory.
        self.one_read = one_read
        self.chunks: Any = None
        self.received = False
        self.done = False  # the whole response has been handed to granian
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.stream: Any = None

    async def receive(self) -> dict[str, Any]:
        if not self.received:
            if self.body is not None or self.one_read:
                self.received = True
                body = self.body if self.body is not None else await self.proto()
                return {"type": "http.request", "body": body, "more_body": False}
            if self.chunks is None:
                self.chunks = self.proto.__aiter__()
            try:
                return {"type": "http.request", "body": await self.chunks.__anext__(),
                        "more_body": True}
            except StopAsyncIteration:
                self.received = True
                return {"type": "http.request", "body": b"", "more_body": False}
        await self.proto.client_disconnect()
        return _DISCONNECT

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if self.done or (kind == "http.response.start" and self.stream is not None):
            # As ASGI servers do: nothing may follow a complete response, and a second
            # start (an error after a stream began) must not be appended to the stream.
            raise RuntimeError("the response has already been sent")
        if kind == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", ())
            if headers and type(headers[0][0]) is str:  # the proxy's text headers: as they are
                self.headers = headers
                return
            try:  # UTF-8: granian writes a str header out as UTF-8, so its bytes arrive as
                # they were (and bytes.decode() is ~25% cheaper than decode("latin-1"))
                self.headers = [(k.decode(), v.decode()) for k, v in headers]
            except UnicodeDecodeError:  # not UTF-8 (a legacy latin-1 value): as latin-1
                self.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                                for k, v in headers]
        elif kind == "http.response.body":
            self.push(message.get("body", b""), message.get("more_body", False))

    def push(self, body: bytes, more: bool) -> None:
        """A body message, written at once: `send` for the app, and the `BODY_PUSH`
        extension for a stream's chunks. It can be synchronous: granian's stream send
        queues the bytes on an unbounded channel and hands back an awaitable that is
        already done. Raises RuntimeError when the client is gone."""
        if self.done:
            raise RuntimeError("the response has already been sent")
        stream = self.stream
        if stream is None:
            if not more:  # the whole response at once (a stream that came in one read)
                self.proto.response_bytes(self.status, self.headers, body)
                self.done = True  # (after: if granian refuses it, the app's 500 can go)
                return
            stream = self.stream = self.proto.response_stream(self.status, self.headers)
        if body:
            sent = stream.send_bytes(body)
            if type(sent) is not _sent_type:
                _settle(sent)
        if not more:
            # granian ends the body when its transport is freed: let go of it now, so
            # the end goes out with (or right after) the last chunk, not after the
            # request's bookkeeping.
            self.done = True
            self.stream = _ENDED


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
        gw = self.gateway
        headers = scope.headers
        length = headers.get("content-length")
        one_read = (length is not None and length.isdigit()
                    and int(length) <= gw.settings.max_body_bytes)
        endpoint = ENDPOINTS.get(scope.path) if scope.method == "POST" else None
        if endpoint is None or not gw.started:
            await self._full(scope, proto, None, one_read)
            return
        gw.begin()  # from the first byte read: a drain waits for this request
        try:
            body = None
            if one_read and (principal := self._caller(headers)) is not None:
                body = await proto()
                hot = gw.hot.get((principal.key_id, endpoint, body))
                # A limited caller takes the full path (only it can answer 429); its memo
                # is checked there. (Its limits are the memo's, or the checks fail anyway.)
                if hot is not None and hot.limits.unlimited:
                    started = time.perf_counter()  # the full path's clock starts here too
                    try:
                        current = still_current_now(gw, principal, hot)
                        if current is None:
                            current = await still_current(gw, principal, hot)
                    except Exception:  # the full path meets the problem again, and reports it
                        current = False
                    if current:
                        self._replay(headers, proto, endpoint, hot, started)
                        return
            # A proxied POST goes to the app's dispatch with a Request made here: the ASGI
            # scope, its header list and the app's own entry are not built for it (and no
            # coroutine of this module's: each level is resumed on every wake-up).
            exchange = _Exchange(proto, body, one_read)
            exchange.received = body is not None  # the Request holds it
            req = Request.made(
                {"type": "http", "method": "POST", "path": scope.path,
                 "query_string": scope.query_string.encode("latin-1"), "client": None,
                 "scheme": scope.scheme, "http_version": scope.http_version},
                exchange.receive,
                # (visible-ASCII values only: encode() is latin-1's bytes, ~25% cheaper)
                {k.encode(): v.encode() for k, v in headers.items()},
                body, exchange.push)
            await gw.dispatch(req, exchange.send)
        finally:
            gw.end()

    async def _full(self, scope: Any, proto: Any, body: bytes | None, one_read: bool) -> None:
        """The ASGI app, with the body if it was read already."""
        exchange = _Exchange(proto, body, one_read)
        asgi_scope = {
            "type": "http", "method": scope.method, "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            # granian's items() holds visible-ASCII values only: encode() is latin-1's
            # bytes, ~25% cheaper
            "headers": [(k.encode(), v.encode()) for k, v in scope.headers.items()],
            "client": None, "scheme": scope.scheme, "http_version": scope.http_version,
            "extensions": {BODY_PUSH: exchange.push},
        }
        await self.gateway(asgi_scope, exchange.receive, exchange.send)

    def _caller(self, headers: Any) -> Principal | None:
        """The caller of a request that may be a remembered repeat: its key is in the
        in-process cache and no cache-control header asks for anything special."""
        for name in _CONTROLS:  # a loop, not any(): no generator per request
            if name in headers:
                return None
        # The fallback headers are read only without a bearer token (each read is a call).
        token = bearer_token(headers.get("authorization"), None, None) \
            or headers.get("x-api-key") or headers.get("api-key")
        principal = self.gateway.auth.cached(token) if token else None
        return principal if principal is not None and principal.allows("proxy") else None

    def _replay(self, headers: Any, proto: Any, endpoint: str, hot: HotRequest,
                started: float) -> None:
        """Answer with the remembered hit, and record what `routes.proxy.finish` records
        for a hit (no limits to settle) without a ProxyContext: the metrics, and the event
        from the memo's template. The answer leaves whole: its first token is its last
        byte."""
        wall_ms = int(time.time() * 1000)
        request_id = headers.get("x-request-id") or new_request_id()
        latency_ms = (time.perf_counter() - started) * 1000
        proto.response_bytes(200, [
            ("x-request-id", request_id),
            ("x-watchllm-latency-ms", f"{latency_ms:.2f}"),
            ("age", str(age_s(hot.created))),
            *hot.headers], hot.body)
        latency_ms = (time.perf_counter() - started) * 1000
        usage = hot.usage
        metrics.record_request(endpoint, hot.model, 200, latency_ms / 1000, latency_ms / 1000,
                               usage.prompt, usage.completion, 0.0, "HIT")
        self.gateway.env.events.put(replayed_event(hot.event, request_id, wall_ms,
                                                   latency_ms, latency_ms))


app = RSGIGateway(Gateway(load_settings(), build_env))
