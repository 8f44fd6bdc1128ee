"""Serve an ASGI app from a Workers `fetch` handler: JS Request in, JS Response out.

    response = await serve_asgi(app, request, ctx)

The app runs as a task. The JS Response is returned as soon as the app has sent its
status and first body chunk: a complete body becomes a plain Response (with its length);
a body sent in parts (`more_body`, e.g. SSE) becomes a Response over a TransformStream
whose writer gets each chunk as the app sends it, so tokens are not buffered. The rest of
the app (later chunks, events, cache writes) runs under `ctx.waitUntil`. The request
body is read chunk by chunk from its stream, the way an ASGI server would hand it over.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

from watchllm.env.cloudflare._js import JsException, as_bytes, is_null, js, js_value
from watchllm.env.cloudflare.context import current_ctx, wait_until
from watchllm.http.asgi import ASGIApp, ClientDisconnected, Message, Scope, raw_headers

_NULL_BODY = {101, 204, 205, 304}


def request_scope(request: Any) -> Scope:
    url = urlsplit(str(request.url))
    headers = [(str(p[0]).lower().encode("latin-1"), str(p[1]).encode("latin-1"))
               for p in request.headers.entries()]
    client_ip = request.headers.get("cf-connecting-ip")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": str(request.method).upper(),
        "scheme": url.scheme or "https",
        "path": unquote(url.path) or "/",
        "raw_path": (url.path or "/").encode("latin-1"),
        "query_string": url.query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "server": (url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
        "client": (str(client_ip), 0) if not is_null(client_ip) else None,
        "state": {},
    }


class _Exchange:
    """One request/response: the receive and send callables handed to the app."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.response: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.finished = asyncio.Event()
        self._reader: Any = None
        self._body_done = False
        self._start: Message | None = None
        self._writer: Any = None
        self._closed = False

    async def receive(self) -> Message:
        if not self._body_done:
            body = self.request.body
            if is_null(body):
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self._reader is None:
                self._reader = body.getReader()
            part = await self._reader.read()
            if part.done:
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": as_bytes(part.value), "more_body": True}
        await self.finished.wait()  # nothing more to receive until the response is over
        return {"type": "http.disconnect"}

    def _respond(self, body: Any) -> None:
        assert self._start is not None
        status = int(self._start["status"])
        headers = js.Headers.new()
        for name, value in raw_headers(self._start.get("headers", [])):  # text or bytes
            headers.append(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        init = js_value({"status": status})
        init.headers = headers
        if status in _NULL_BODY:
            body = None
        if not self.response.done():
            self.response.set_result(js.Response.new(body, init))

    async def send(self, message: Message) -> None:
        if self._closed:
            raise ClientDisconnected()
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body" or self._start is None:
            return
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self._writer is None:
            if not more:  # the whole body in one message: a plain Response
                self._respond(js_value(chunk))
                self._closed = True
                return
            stream = js.TransformStream.new()
            self._writer = stream.writable.getWriter()
            self._respond(stream.readable)
        try:
            if chunk:
                await self._writer.write(js_value(chunk))
            if not more:
                self._closed = True
                await self._writer.close()
        except JsException:  # the client went away: the readable side was cancelled
            self._closed = True
            raise ClientDisconnected() from None

    def abandon(self) -> None:
        """After the app returned: end a stream it left open, answer if it never did."""
        self.finished.set()
        if self._writer is not None and not self._closed:
            self._closed = True
            self._writer.close()
        if not self.response.done():
            self._start = {"status": 500, "headers": [(b"content-type", b"application/json")]}
            self._respond(js_value(b'{"error":{"message":"The gateway sent no response.",'
                                   b'"type":"server_error"}}'))


async def serve_asgi(app: ASGIApp, request: Any, ctx: Any = None) -> Any:
    exchange = _Exchange(request)

    async def run() -> None:
        try:
            await app(request_scope(request), exchange.receive, exchange.send)
        finally:
            exchange.abandon()

    token = current_ctx.set(ctx)  # the app task (and what it spawns) sees this request's ctx
    try:
        task = wait_until(run())
    finally:
        current_ctx.reset(token)
    done, _ = await asyncio.wait({task, exchange.response}, return_when=asyncio.FIRST_COMPLETED)
    if task in done and task.exception() is not None and not exchange.response.done():
        raise task.exception()  # type: ignore[misc]
    return await exchange.response
