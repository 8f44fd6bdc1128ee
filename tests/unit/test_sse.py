from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from watchllm.proxy import sse
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


@given(st.lists(st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-2**63, 2**63 - 1),
                                                   st.text(max_size=8)),
                    max_size=3).map(lambda d: sse.encode(orjson.dumps(d))),
    st.just(b"data: not json\n\n"), st.just(b": comment\n\n"), st.just(b"data:{}\r\n\r\n"),
    st.just(b"event: x\ndata: [1]\n\n")), max_size=6), st.booleans())
def test_stream_chunks_fast_path_equals_the_event_parser(events: list[bytes],
                                                         done: bool) -> None:
    """sse.json_events reads OpenAI-framed streams as one JSON array; whatever the
    framing, it must give what parsing event by event gives."""
    raw = b"".join(events) + (sse.encode(sse.DONE) if done else b"")
    expected, invalid, seen_done = [], False, False
    for _, data in sse.iter_events(raw):
        if data == sse.DONE:
            seen_done = True
            continue
        try:
            expected.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            invalid = True
    assert sse.json_events(raw) == (expected, invalid, seen_done)


def test_an_event_holding_two_objects_is_not_split_by_the_fast_path() -> None:
    raw = (b'data: {"choices":[]},{"usage":{"prompt_tokens":1}}\n\n'
           b'data: {"choices":[]}\n\ndata: [DONE]\n\n')
    # as the event parser: the first is invalid
    assert sse.json_events(raw) == ([{"choices": []}], True, True)
