from __future__ import annotations

import orjson
import pytest

from watchllm.errors import InvalidRequestError
from watchllm.proxy.anthropic_translate import (
    StreamTranslator,
    to_chat_completion,
    to_messages_request,
)
from watchllm.proxy.sse import encode, iter_events


def test_request_translation() -> None:
    req = {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url",
                                          "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "type": "function",
                 "function": {"name": "f", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "r1"},
        ],
        "stop": "END", "temperature": 0.2, "tool_choice": "required", "user": "u1",
        "tools": [{"type": "function",
                   "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    out = to_messages_request(req, "claude-x", stream=True)
    assert out["system"] == "sys" and out["max_tokens"] == 4096 and out["stream"] is True
    assert out["messages"][0]["content"][1]["source"] == {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0K"}
    assert out["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "f",
                                              "input": {"a": 1}}]
    assert out["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "r1"}]}
    assert out["stop_sequences"] == ["END"] and out["tool_choice"] == {"type": "any"}
    assert out["metadata"] == {"user_id": "u1"} and out["temperature"] == 0.2


def test_bad_tool_arguments_are_a_400() -> None:
    req = {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "t", "function": {"name": "f", "arguments": "{nope"}}]}]}
    with pytest.raises(InvalidRequestError, match=r"messages\[0\].tool_calls\[0\]"):
        to_messages_request(req, "m", False)


def test_response_translation() -> None:
    msg = {"id": "msg_1", "content": [{"type": "text", "text": "hi"},
                                      {"type": "tool_use", "id": "tu", "name": "f",
                                       "input": {"x": 2}}],
           "stop_reason": "tool_use",
           "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3}}
    out = to_chat_completion(msg, "claude-x")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "hi"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x":2}'}
    assert out["usage"] == {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15,
                            "prompt_tokens_details": {"cached_tokens": 3}}


def test_stream_translation_any_chunking() -> None:
    events = [
        ("message_start", {"message": {"id": "m1", "usage": {"input_tokens": 4}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "tu",
                                                               "name": "f"}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                       "partial_json": '{"a"'}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                       "partial_json": ": 1}"}}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {}),
    ]
    raw = b"".join(encode(orjson.dumps({"type": k, **v}), k) for k, v in events)
    for size in (1, 7, len(raw)):
        t = StreamTranslator("claude-x", include_usage=True)
        out = b"".join(t.feed(raw[i:i + size]) for i in range(0, len(raw), size))
        chunks = [orjson.loads(d) for _, d in iter_events(out) if d != b"[DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                       if c["choices"])
        args = "".join(tc["function"].get("arguments", "") for c in chunks if c["choices"]
                       for tc in c["choices"][0]["delta"].get("tool_calls", []))
        assert text == "Hello" and args == '{"a": 1}'
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert chunks[-1]["usage"]["completion_tokens"] == 9
        assert out.endswith(b"data: [DONE]\n\n")
