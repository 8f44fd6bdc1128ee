"""stream_usage: the extension and the twin read the same usage and text from any stream."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

COUNT = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1),
                  st.floats(allow_nan=False, allow_infinity=False, width=32),
                  st.booleans(), st.none(), st.text(max_size=3), st.just([1]), st.just({}))
ANY = st.one_of(COUNT, st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right type, or any other value in its place."""
    return st.one_of(strategy, ANY)


USAGE = st.dictionaries(
    st.sampled_from(["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                     "total_tokens", "prompt_tokens_details", "input_tokens_details"]),
    st.one_of(COUNT, st.dictionaries(st.sampled_from(["cached_tokens", "x"]), COUNT,
                                     max_size=2)), max_size=6)
CALL = st.fixed_dictionaries({}, optional={
    "index": st.integers(0, 3),
    "function": maybe(st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=4), "arguments": maybe(st.text(max_size=8))}))})
DELTA = st.fixed_dictionaries({}, optional={
    "content": maybe(st.text(max_size=12)), "role": st.just("assistant"),
    "tool_calls": maybe(st.lists(maybe(CALL), max_size=2))})
CHOICE = st.fixed_dictionaries({"index": st.integers(0, 2)}, optional={
    "delta": maybe(DELTA), "finish_reason": st.sampled_from([None, "stop", "length"])})
CHUNK = st.fixed_dictionaries({"id": st.just("c1"), "object": st.just("chat.completion.chunk")},
                              optional={"choices": maybe(st.lists(maybe(CHOICE), max_size=3)),
                                        "usage": maybe(USAGE)})


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """OpenAI's framing most of the time; otherwise CRLF, `data:` without the space,
    multi-line data, comments, named events, non-JSON and non-object events."""
    events = []
    for chunk in draw(st.lists(st.one_of(CHUNK, ANY), max_size=6)):
        data = orjson.dumps(chunk)
        form = draw(st.sampled_from(["plain"] * 4 + ["nospace", "split", "event", "comment"]))
        if form == "nospace":
            events.append(b"data:" + data + b"\n\n")
        elif form == "split" and len(data) > 2:
            cut = draw(st.integers(1, len(data) - 1))
            events.append(b"data: " + data[:cut] + b"\ndata: " + data[cut:] + b"\n\n")
        elif form == "event":
            events.append(b"event: message\ndata: " + data + b"\n\n")
        elif form == "comment":
            events.append(b": keep-alive\n\ndata: " + data + b"\n\n")
        else:
            events.append(b"data: " + data + b"\n\n")
    if draw(st.booleans()):
        events.append(b"data: not json\n\n")
    if draw(st.booleans()):
        events.append(b"data: [DONE]\n\n")
    raw = b"".join(events)
    if draw(st.booleans()):
        raw = raw.replace(b"\n", b"\r\n")
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut anywhere, as a broken stream is
    return raw


@settings(max_examples=1500, deadline=None)
@given(streams())
def test_twin_equals_extension(rust: ModuleType, twin: ModuleType, raw: bytes) -> None:
    assert twin.stream_usage(raw) == rust.stream_usage(raw)


# Bytes that make JSON invalid, or valid in another way, when they land somewhere in it.
DAMAGE = list(b'{}[]",:\\0123456789.eE+-tfnul \t\r\nx\xff\xc3\xa9\x00\x1f')


@settings(max_examples=1500, deadline=None)
@given(streams(), st.lists(st.tuples(st.integers(0, 1 << 16),
                                     st.sampled_from(["put", "cut", "set"]),
                                     st.sampled_from(DAMAGE)), min_size=1, max_size=4))
def test_twin_equals_extension_on_damaged_bytes(rust: ModuleType, twin: ModuleType, raw: bytes,
                                                damage: list[tuple[int, str, int]]) -> None:
    """The two JSON readers (Rust's, orjson in the twin) accept and reject the same events,
    malformed ones included."""
    data = bytearray(raw)
    for at, how, byte in damage:
        at %= len(data) + 1
        if how == "put":
            data[at:at] = bytes([byte])
        elif data:
            at = min(at, len(data) - 1)
            if how == "cut":
                del data[at]
            else:
                data[at] = byte
    assert twin.stream_usage(bytes(data)) == rust.stream_usage(bytes(data))


def test_the_deepest_nesting_read_is_the_same(rust: ModuleType, twin: ModuleType) -> None:
    """An event whose arrays and objects nest deeper than MAX_DEPTH is skipped by both (the
    limit of the Rust reader); one at MAX_DEPTH is read."""
    from watchllm.proxy.sse import MAX_DEPTH

    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1100):
        for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
            inner = opener * (depth - 1) + b"1" + closer * (depth - 1)  # in the event's object
            raw = b'data: {"id":' + inner + b',"choices":[{"delta":{"content":"X"}}]}\n\n'
            want = (None, "X" if depth <= MAX_DEPTH else "")
            for impl in (rust, twin):
                assert impl.stream_usage(raw) == want, (impl, depth, opener)
        # The depth is the text's: a deep value under a key given twice is walked too,
        # though the parsed object keeps only the last; brackets in strings do not count.
        deep = b"[" * depth + b"]" * depth
        for raw in (b'data: {"choices":[{"delta":{"content":"X"}}],"x":' + deep + b',"x":1}\n\n',
                    b'data: {"choices":[{"delta":{"content":"X"}}],"s":"' + deep + b'"}\n\n'):
            want = (None, "X" if depth < MAX_DEPTH or b'"s"' in raw else "")
            for impl in (rust, twin):
                assert impl.stream_usage(raw) == want, (impl, depth, raw[:60])


def test_openai_stream(rust: ModuleType, twin: ModuleType) -> None:
    raw = (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
           b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
           b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":'
           b'{"arguments":"{\\"a\\":1}"}}]}}]}\n\n'
           b'data: {"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
           b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,'
           b'"prompt_tokens_details":{"cached_tokens":8}}}\n\ndata: [DONE]\n\n')
    for impl in (rust, twin):
        assert impl.stream_usage(raw) == ((9, 3, 8), 'Hel{"a":1}lo')
        assert impl.stream_usage(raw.replace(b"\n", b"\r\n")) == ((9, 3, 8), 'Hel{"a":1}lo')
        assert impl.stream_usage(b"") == (None, "")


def test_the_last_usage_wins_and_odd_counts_are_zero(rust: ModuleType, twin: ModuleType) -> None:
    raw = (b'data: {"usage":{"prompt_tokens":5}}\n\n'
           b'data: {"usage":{"input_tokens":"7","output_tokens":2.9,'
           b'"input_tokens_details":{"cached_tokens":-1}}}\n\n')
    for impl in (rust, twin):
        assert impl.stream_usage(raw) == ((0, 2, 0), "")


def test_duplicate_keys_keep_the_last_value_at_every_level(rust: ModuleType,
                                                         twin: ModuleType) -> None:
    """JSON objects with a key twice read as Python's dict does: the last one wins, for
    `choices`, `delta`, `content`, `tool_calls`, `function` and `arguments` alike."""
    events = [
        b'{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}',
        b'{"choices":[{"delta":{"content":"c"}}],"choices":5}',
        b'{"choices":[{"delta":{"content":"d"},"delta":{"content":"e"}}]}',
        b'{"choices":[{"delta":{"content":"f","content":"g","content":7}}]}',
        b'{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"h"}}],'
        b'"content":"i","tool_calls":[{"function":{"arguments":"j","arguments":"k"}}]}}]}',
        b'{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"l"},'
        b'"function":{"name":"x"}},{"function":{"arguments":"m"}}]}}]}',
        b'{"usage":{"prompt_tokens":3},"usage":null}',
    ]
    raw = b"".join(b"data: " + e + b"\n\n" for e in events)
    for impl in (rust, twin):
        assert impl.stream_usage(raw) == (None, "beikm"), impl


def test_an_event_the_python_parser_rejects_is_skipped_whole(rust: ModuleType,
                                                            twin: ModuleType) -> None:
    """A number that overflows a double, a lone surrogate or invalid UTF-8 in a field that
    is otherwise ignored still makes the event invalid JSON, as orjson has it."""
    good = b'data: {"choices":[{"delta":{"content":"ok"}}]}\n\n'
    for bad in (b'{"id":1e400,"choices":[{"delta":{"content":"X"}}]}',
                b'{"choices":[{"delta":{"content":"X"},"logprobs":[-1e999]}]}',
                b'{"id":"\\ud800","choices":[{"delta":{"content":"X"}}]}',
                b'{"id":"\xff","choices":[{"delta":{"content":"X"}}]}',
                b'{"choices":[{"delta":{"content":"X"}}]} trailing'):
        raw = good + b"data: " + bad + b"\n\n" + good
        for impl in (rust, twin):
            assert impl.stream_usage(raw) == (None, "okok"), (impl, bad)


def test_malformed_events_that_regroup_into_valid_json_stay_invalid(rust: ModuleType,
                                                                    twin: ModuleType) -> None:
    """Three invalid events whose bytes, joined into one array, would parse as three
    values: every one is skipped, and such a stream is never cached."""
    from watchllm.cache.entry import entry_from_stream

    raw = b"".join(b"data: " + e + b"\n\n" for e in (
        b'{"a":"}', b'{"}', b'{"choices":[{"delta":{"content":"Z"},"finish_reason":"stop"}]},'
        b'{"y":2}')) + b"data: [DONE]\n\n"
    for impl in (rust, twin):
        assert impl.stream_usage(raw) == (None, ""), impl
    assert entry_from_stream("chat/completions", raw) is None


MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"), "content": maybe(st.text(max_size=12)),
    "tool_calls": maybe(st.lists(maybe(CALL), max_size=2))})
RESPONSE = st.fixed_dictionaries({"id": st.just("r1")}, optional={
    "choices": maybe(st.lists(maybe(st.fixed_dictionaries(
        {"index": st.integers(0, 2)}, optional={"message": maybe(MESSAGE),
                                                "text": maybe(st.text(max_size=5))})),
        max_size=3)),
    "usage": maybe(USAGE)})


@settings(max_examples=800, deadline=None)
@given(RESPONSE)
def test_a_complete_response_is_read_by_the_streams_rule(rust: ModuleType,
                                                         doc: dict[str, Any]) -> None:
    """Non-streamed responses (events/usage.py) read usage and text by the same rule as
    streams: the same document sent as one stream chunk (message as delta) gives the same
    counts and text, and a malformed upstream body never raises."""
    from watchllm.events.usage import Usage, from_body

    usage, text, _ = from_body("chat/completions", orjson.dumps(doc))
    chunk = dict(doc)
    if isinstance(doc.get("choices"), list):
        chunk["choices"] = [{**c, "delta": c.pop("message")} if isinstance(c, dict)
                            and "message" in c else c for c in map(_copy, doc["choices"])]
    reported, streamed_text = rust.stream_usage(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert (usage.prompt, usage.completion, usage.cached) == (reported or (0, 0, 0))
    assert text == streamed_text
    assert isinstance(usage, Usage)
    from_body("completions", orjson.dumps(doc))  # never raises either


def _copy(v: Any) -> Any:
    return dict(v) if isinstance(v, dict) else v
