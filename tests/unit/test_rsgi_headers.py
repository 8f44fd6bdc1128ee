"""The RSGI adapter's header conversion: ASGI's bytes to the str granian takes, which
granian writes out as UTF-8."""

from __future__ import annotations

from typing import Any

from watchllm.entrypoints.rsgi import _Exchange


class Proto:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, headers, body))


async def _send(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    proto = Proto()
    exchange = _Exchange(proto, b"", True)
    await exchange.send({"type": "http.response.start", "status": 200, "headers": headers})
    await exchange.send({"type": "http.response.body", "body": b"{}"})
    (status, sent, body), = proto.sent
    assert (status, body) == (200, b"{}")
    return sent


async def test_utf8_header_values_leave_as_their_bytes() -> None:
    """A UTF-8 value decodes to the str whose UTF-8 (what granian writes) is its bytes."""
    value = "café ✓".encode()
    sent = await _send([(b"x-request-id", b"req_1"), (b"x-upstream-note", value)])
    assert sent == [("x-request-id", "req_1"), ("x-upstream-note", "café ✓")]
    assert sent[1][1].encode() == value


async def test_a_value_that_is_not_utf8_is_read_as_latin1() -> None:
    """Bytes that are not UTF-8 (a legacy latin-1 value) still answer, read as latin-1."""
    sent = await _send([(b"content-type", b"application/json"), (b"x-old", b"caf\xe9")])
    assert sent == [("content-type", "application/json"), ("x-old", "café")]


async def test_text_headers_go_to_granian_as_they_are() -> None:
    """The proxy's responses carry str pairs (http.asgi.TextHeaders): handed over
    unconverted, the very list."""
    headers = [("x-request-id", "req_1"), ("x-ratelimit-remaining-requests", "59")]
    assert await _send(headers) is headers  # type: ignore[arg-type]


async def test_the_asgi_entry_point_gives_asgi_servers_bytes() -> None:
    """ASGI servers take bytes: `entrypoints.asgi` encodes a text response's headers (as
    UTF-8, which is what granian writes for str) and leaves bytes ones alone."""
    from watchllm.entrypoints.asgi import ASGIGateway

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = scope["test_headers"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def served(headers: Any) -> Any:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        await ASGIGateway(app)({"type": "http", "test_headers": headers},  # type: ignore[arg-type]
                               None, send)
        return sent[0]["headers"]

    assert await served([("x-note", "café ✓"), ("x-n", "1")]) == \
        [(b"x-note", "café ✓".encode()), (b"x-n", b"1")]
    assert await served([(b"x-n", b"1")]) == [(b"x-n", b"1")]


def test_an_upstream_utf8_value_is_sent_as_its_bytes() -> None:
    """The lean client reads header values as latin-1; a UTF-8 one becomes the text whose
    UTF-8 is its bytes, one that is not UTF-8 stays as read."""
    from watchllm.routes.proxy import _as_sent

    raw = "café ✓".encode()
    assert _as_sent(raw.decode("latin-1")).encode() == raw
    assert _as_sent("caf\xe9") == "caf\xe9"
    # A value no client here should produce (a lone surrogate) still leaves, replaced.
    assert _as_sent("caf\udce9").encode() == b"caf?"
