"""`instrument_openai`: a real openai client (sync and async) on an httpx mock transport;
each call becomes a prompt_call (or error) event, streams included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.sdk.test_sdk import Fake
from watchllm.sdk import WatchLLM

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello there"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 4}},
}


def chunk(content: str | None, usage: dict[str, int] | None = None) -> bytes:
    body = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini", "choices": [] if content is None else [
                {"index": 0, "delta": {"content": content}, "finish_reason": None}],
            "usage": usage}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def handler(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body["model"] == "broken":
        return httpx.Response(400, json={"error": {"message": "bad model", "type": "x"}})
    if body.get("stream"):
        data = chunk("Hel") + chunk("lo") + chunk(None, {"prompt_tokens": 5,
                                                        "completion_tokens": 2,
                                                        "total_tokens": 7}) + b"data: [DONE]\n\n"
        return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=COMPLETION, headers={"x-request-id": "req-abc"})


@pytest.fixture
def wl() -> Any:
    fake = Fake()
    client = WatchLLM("k", "http://x", transport=fake, flush_interval=60)
    client.fake = fake  # type: ignore[attr-defined]
    yield client
    client.close(timeout=1)


MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_sync_calls_are_logged(wl: Any) -> None:
    oa = wl.instrument_openai(openai.OpenAI(
        api_key="sk", base_url="https://api.openai.com/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler))))
    with wl.run("r") as run:
        reply = oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="u9")
    assert reply.choices[0].message.content == "Hello there"  # the caller's result, untouched
    chunks = list(oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                             stream=True,
                                             stream_options={"include_usage": True}))
    assert len(chunks) == 3
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="broken", messages=MESSAGES)
    assert wl.flush(5)
    call, streamed, failed = wl.fake.events
    assert call["event_type"] == "prompt_call" and call["run_id"] == run.run_id
    assert (call["model"], call["response"], call["tokens_input"], call["tokens_output"],
            call["tokens_cached"], call["user_id"]) == ("gpt-4o-mini-2024", "Hello there", 12,
                                                        3, 4, "u9")
    assert json.loads(call["prompt"]) == MESSAGES and call["provider"] == "openai"
    assert call["request_id"] == "req-abc" and call["latency_ms"] > 0
    assert (streamed["response"], streamed["tokens_input"]) == ("Hello", 5)
    assert 0 <= streamed["time_to_first_token_ms"] <= streamed["latency_ms"]
    assert (failed["event_type"], failed["error_type"], failed["http_status"]) == (
        "error", "BadRequestError", 400)
    assert oa.chat.completions.create.__wrapped__  # patched once; again is a no-op
    assert wl.instrument_openai(oa) is oa


async def test_async_calls_are_logged(wl: Any) -> None:
    oa = wl.instrument_openai(openai.AsyncOpenAI(
        api_key="sk", base_url="http://localhost:4000/v1", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler))))
    reply = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.usage.total_tokens == 15
    stream = await oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                              stream=True)
    text = [c.choices[0].delta.content async for c in stream if c.choices]
    assert text == ["Hel", "lo"]
    assert await wl.aflush()
    call, streamed = wl.fake.events
    assert call["provider"] == "localhost" and call["tokens_output"] == 3
    assert streamed["response"] == "Hello"
