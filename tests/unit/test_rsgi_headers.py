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
