"""ASGI types and the few helpers the app needs: read a bounded body, send a response.

No framework: a request costs one dict of headers and one body read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from watchllm.errors import InvalidRequestError, PayloadTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]
# The proxy's responses carry their headers as text: granian's RSGI takes str pairs, so
# the RSGI adapter hands them over as they are (encoding ~6 values here and decoding them
# there cost ~12k instructions per request). `entrypoints.asgi` encodes them for ASGI
# servers, which take bytes. One response's headers are all of one kind.
TextHeaders = list[tuple[str, str]]
Headers = RawHeaders | TextHeaders

JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]
JSON_TEXT_HEADERS: TextHeaders = [("content-type", "application/json")]
SSE_TEXT_HEADERS: TextHeaders = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # tell nginx-style proxies not to buffer the stream
]

# A server-side ASGI extension of ours: `scope["extensions"][BODY_PUSH]`, when a server
# offers it, is `push(body, more)`, a synchronous `send` of an `http.response.body`
# message (after `http.response.start` was sent) that raises RuntimeError when the client
# is gone. With it a stream's chunks can be written from the callback of the upstream
# read that brought them (`proxy.streaming`); the RSGI adapter offers it, and ASGI
# servers, which have no such call, do not.
BODY_PUSH = "watchllm.http.response.push"
Push = Callable[[bytes, bool], None]


def raw_headers(headers: Any) -> RawHeaders:
    """ASGI's bytes pairs for a response's headers, text (UTF-8, as granian writes str)
    or bytes already."""
    if headers and isinstance(headers[0][0], str):
        return [(k.encode(), v.encode()) for k, v in headers]
    return list(headers)


class ClientDisconnected(Exception):
    """The client went away before the response was complete."""


class Request:
    __slots__ = ("_body", "_headers", "method", "path", "push", "query", "raw_headers",
                 "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        # Header names arrive lower-cased (ASGI spec); repeated headers: last wins. Kept as
        # bytes: the hot path reads three or four of them, so nothing else is decoded.
        self.raw_headers: dict[bytes, bytes] = dict(scope["headers"])
        self._headers: dict[str, str] | None = None
        self._body: bytes | None = None
        extensions = scope.get("extensions")
        self.push: Push | None = extensions.get(BODY_PUSH) if extensions else None

    @classmethod
    def made(cls, scope: Scope, receive: Receive, raw_headers: dict[bytes, bytes],
             body: bytes | None, push: Push | None) -> Request:
        """A request a server entry made itself (`entrypoints.rsgi`): `scope` without
        its headers (they are `raw_headers`), and the body when it was read already."""
        req = cls.__new__(cls)
        req.scope = scope
        req.receive = receive
        req.method = scope["method"]
        req.path = scope["path"]
        req.query = scope["query_string"]
        req.raw_headers = raw_headers
        req._headers = None
        req._body = body
        req.push = push
        return req

    def header(self, name: bytes) -> str | None:
        value = self.raw_headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1")
                             for k, v in self.raw_headers.items()}
        return self._headers

    def read_already(self) -> bytes | None:
        """The body, when it has been read (by `body`, or by the server entry): no
        coroutine for it."""
        return self._body

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 beyond `limit` bytes (checked before reading when declared)."""
        if self._body is not None:
            return self._body
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(
                f"Request body is {declared} bytes; the limit is {limit} bytes "
                "(WATCHLLM_MAX_BODY_BYTES)."
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"Request body exceeds the limit of {limit} bytes "
                        "(WATCHLLM_MAX_BODY_BYTES)."
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def json_object(self, limit: int) -> tuple[bytes, dict[str, Any]]:
        """The body parsed as a JSON object (400 naming the problem otherwise)."""
        raw = await self.body(limit)
        return raw, parse_object(raw)

    def query_params(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))

    def bearer(self) -> str | None:
        token = bearer_token(self.header(b"authorization"), None, None)
        # The fallback headers are read only without a bearer token.
        return token or self.header(b"x-api-key") or self.header(b"api-key")


def bearer_token(authorization: str | None, x_api_key: str | None,
                 api_key: str | None) -> str | None:
    """The caller's key: `Authorization: Bearer <key>`, else `x-api-key` / `api-key`."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key or api_key


def parse_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (400 naming the problem otherwise)."""
    if not raw:
        raise InvalidRequestError("Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"Request body must be a JSON object, got {type(data).__name__}.")
    return data


async def send_body(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, headers: RawHeaders | None = None) -> None:
    await send_body(send, status, orjson.dumps(data), JSON_HEADERS + (headers or []))
