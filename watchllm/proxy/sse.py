"""Server-sent events: incremental decoding and encoding (WHATWG framing)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

DONE = b"[DONE]"
# The deepest nesting of arrays and objects an event may have: a deeper one is not read
# as JSON (serde_json's recursion limit, which the Rust reader, `stream.rs`, has; orjson's
# is ~1024, and the two must agree).
MAX_DEPTH = 127


def encode(data: bytes, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


class SSEDecoder:
    """Feed bytes as they arrive; get complete (event, data) pairs out."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buf = self._buf + chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buf = buf.split(b"\n\n")
        return [ev for ev in map(_parse_block, blocks) if ev is not None]

    def close(self) -> list[tuple[str, bytes]]:
        """Whatever was left without a final blank line."""
        rest, self._buf = self._buf, b""
        ev = _parse_block(rest)
        return [ev] if ev is not None else []


def _parse_block(block: bytes) -> tuple[str, bytes] | None:
    event = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    return (event, b"\n".join(data)) if data else None


def iter_events(raw: bytes) -> Iterator[tuple[str, bytes]]:
    decoder = SSEDecoder()
    yield from decoder.feed(raw)
    yield from decoder.close()


def simple_data(raw: bytes) -> list[bytes] | None:
    """The data of each event when every event is a single `data: ` line (OpenAI's framing),
    else None (then use `iter_events`). A few C-level splits instead of a parse per event."""
    if b"\r" in raw:
        return None
    blocks = raw.rstrip(b"\n").split(b"\n\n")
    for block in blocks:
        if not block.startswith(b"data: ") or b"\n" in block:
            return None
    return [block[6:] for block in blocks]


def json_events(raw: bytes) -> tuple[list[Any], bool, bool]:
    """The JSON value of each event of a whole stream, in order, without [DONE]; whether
    some event was not JSON (it is left out); whether a [DONE] came.

    Each event is parsed on its own: parsing the events joined into one array would
    accept malformed events whose pieces regroup into as many valid values."""
    data = simple_data(raw)
    payloads = data if data is not None else [payload for _, payload in iter_events(raw)]
    values: list[Any] = []
    invalid = done = False
    for payload in payloads:
        if payload == DONE:
            done = True
            continue
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            invalid = True
            continue
        # Counted in C first: only an event with that many brackets can be too deep.
        if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and _too_deep(payload):
            invalid = True
            continue
        values.append(value)
    return values, invalid, done


def _too_deep(payload: bytes) -> bool:
    """Whether arrays and objects nest more than MAX_DEPTH deep in `payload` (valid JSON).
    Counted in the text, as the Rust reader counts: a key given twice keeps only its last
    value in the parsed object, but the reader walked the first one too."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = 0
    for b in brackets:
        if b in _OPENERS:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string, escapes included
_OPENERS = frozenset(b"[{")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
