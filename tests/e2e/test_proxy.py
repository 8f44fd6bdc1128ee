"""The drop-in promise: the official openai SDK, pointed at the gateway, just works."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import assert_disconnect_cancels_upstream, stats
from watchllm.testing.servers import Server

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion_sync(client: openai.OpenAI, upstream: Server) -> None:
    before = stats(upstream)["requests"].get("/v1/chat/completions", 0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, extra_body={"unknown_field": {"kept": True}})
    reply = raw.parse()
    assert reply.choices[0].message.content.endswith("What is the capital of France?")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-watchllm-latency-ms"]) >= 0
    s = stats(upstream)
    assert s["requests"]["/v1/chat/completions"] == before + 1
    assert s["last_body"]["unknown_field"] == {"kept": True}  # unknown fields pass through
    # The provider key is what the upstream saw; the client's key never reaches it.
    assert s["last_headers"]["authorization"] == "Bearer sk-upstream-secret-never-shown"


def test_body_reaches_client_byte_for_byte(gateway: Server, api_key: str,
                                           upstream: Server) -> None:
    body = {"model": "gpt-4o-mini", "messages": MSG, "mock": {"content": "exact  bytes\u00e9"}}
    via = httpx.post(gateway.url + "/v1/chat/completions", json=body,
                     headers={"authorization": f"Bearer {api_key}"})
    direct = httpx.post(upstream.url + "/v1/chat/completions", json=body)
    strip = ("id", "created")
    a, b = via.json(), direct.json()
    assert {k: v for k, v in a.items() if k not in strip} == \
        {k: v for k, v in b.items() if k not in strip}
    assert via.headers["content-type"] == "application/json"


async def test_chat_completion_async(aclient: openai.AsyncOpenAI) -> None:
    replies = await asyncio.gather(*(aclient.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(20)))
    assert [r.choices[0].message.content.endswith(f"q{i}") for i, r in enumerate(replies)] == \
        [True] * 20
    await aclient.close()


def test_streaming_arrives_incrementally(client: openai.OpenAI) -> None:
    start = time.perf_counter()
    arrivals = []
    text = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True,
        extra_body={"mock": {"chunk_delay_ms": 150, "chunks": 4}})
    for chunk in stream:
        arrivals.append(time.perf_counter() - start)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert "".join(text).endswith("What is the capital of France?")
    # Four content chunks 150 ms apart: the first must not wait for the last.
    assert arrivals[0] < 0.5
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_stream_usage_from_final_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b", "a"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 1536
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]


def test_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "mock-1"} <= ids


def test_legacy_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert result.choices[0].text.endswith("Say hi")


def test_responses_pass_through(client: openai.OpenAI) -> None:
    result = client.responses.create(model="gpt-4o-mini", input="Hello there")
    assert result.output_text.endswith("Hello there")


def test_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, extra_headers={"x-request-id": "my-trace-123"})
    assert raw.headers["x-request-id"] == "my-trace-123"


def test_provider_headers_reach_an_unlimited_caller(client: openai.OpenAI) -> None:
    """Without WatchLLM limits, the provider's own x-ratelimit-* and processing time reach
    the client as sent (the mock sends OpenAI's set), and its request id is kept apart."""
    for stream in (False, True):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"provider {stream}"}],
            stream=stream)
        assert raw.headers.get_list("x-ratelimit-limit-requests") == ["10000"]
        assert raw.headers.get_list("x-ratelimit-remaining-tokens") == ["29999980"]
        assert raw.headers["openai-processing-ms"] == "312"
        assert raw.headers["x-upstream-request-id"].startswith("req_")
        assert raw.headers["x-request-id"] != raw.headers["x-upstream-request-id"]


def test_client_disconnect_cancels_upstream(gateway: Server, api_key: str,
                                            upstream: Server) -> None:
    assert_disconnect_cancels_upstream(gateway, api_key, upstream)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_translation(client: openai.OpenAI, upstream: Server, stream: bool) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour"}]
    if stream:
        parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="claude-sonnet-4-5", messages=messages, stream=True, max_tokens=50)
            if c.choices]
        text = "".join(parts)
    else:
        reply = client.chat.completions.create(model="claude-sonnet-4-5", messages=messages,
                                               max_tokens=50)
        text = reply.choices[0].message.content or ""
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None and reply.usage.prompt_tokens == 11
    assert text.endswith("Name a colour")
    sent = stats(upstream)["last_body"]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text",
                                                              "text": "Name a colour"}]}]
    assert sent["max_tokens"] == 50
    assert stats(upstream)["last_headers"]["x-api-key"] == "ak-upstream-secret"


def test_anthropic_tool_calls(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    reply = client.chat.completions.create(model="claude-sonnet-4-5", messages=MSG, tools=tools,
                                           tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"mock"}')
    assert reply.choices[0].finish_reason == "tool_calls"
    args = "".join(
        tc.function.arguments or ""
        for c in client.chat.completions.create(model="claude-sonnet-4-5", messages=MSG,
                                                tools=tools, tool_choice="required", stream=True)
        if c.choices for tc in (c.choices[0].delta.tool_calls or []))
    assert args == '{"city":"mock"}'


def test_openai_option_headers_are_forwarded(client: openai.OpenAI, upstream: Server) -> None:
    unique = [{"role": "user", "content": f"headers {time.time_ns()}"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=unique,
                                   extra_headers={"OpenAI-Beta": "assistants=v2",
                                                  "x-private": "not forwarded"})
    sent = stats(upstream)["last_headers"]
    assert sent["openai-beta"] == "assistants=v2" and "x-private" not in sent


def test_metrics_count_requests_and_cache_outcomes(gateway: Server, client: openai.OpenAI) -> None:
    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))

    before = httpx.get(gateway.url + "/metrics").text
    msgs = [{"role": "user", "content": f"metrics {time.time_ns()}"}]
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    time.sleep(1.2)  # per-request samples reach prometheus-client once a second
    after = httpx.get(gateway.url + "/metrics").text
    ok = 'watchllm_requests_total{model="gpt-4o-mini",route="chat/completions",status="200"}'
    assert value(after, ok) - value(before, ok) == 2
    hit = 'watchllm_cache_lookups_total{outcome="HIT"}'
    assert value(after, hit) - value(before, hit) == 1
    assert "watchllm_event_pipeline" in after
