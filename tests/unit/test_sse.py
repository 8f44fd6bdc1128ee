from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from watchllm.proxy.sse import SSEDecoder, encode, iter_events


def test_decodes_across_arbitrary_chunk_boundaries() -> None:
    raw = b"event: a\ndata: {\"x\":1}\n\ndata: line1\ndata: line2\n\n: comment\n\ndata: [DONE]\n\n"
    expected = [("a", b'{"x":1}'), ("message", b"line1\nline2"), ("message", b"[DONE]")]
    assert list(iter_events(raw)) == expected
    for size in range(1, 12):
        d = SSEDecoder()
        out = []
        for i in range(0, len(raw), size):
            out += d.feed(raw[i:i + size])
        assert out + d.close() == expected


def test_crlf_framing() -> None:
    assert list(iter_events(b"data: a\r\n\r\ndata: b\r\n\r\n")) == [("message", b"a"),
                                                                  ("message", b"b")]


@given(st.lists(st.binary(min_size=1).filter(lambda b: b"\n" not in b and b"\r" not in b),
                max_size=10))
def test_roundtrip(payloads: list[bytes]) -> None:
    raw = b"".join(encode(p) for p in payloads)
    assert [d for _, d in iter_events(raw)] == payloads
