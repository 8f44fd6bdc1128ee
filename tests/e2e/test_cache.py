"""The response cache through the real server, with the openai SDK and a counting upstream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import new_key, stats
from watchllm.testing.servers import Server


def _q(text: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def _calls(upstream: Server) -> int:
    return int(stats(upstream)["requests"].get("/v1/chat/completions", 0))


def _create(client: openai.OpenAI, messages: Any, **kw: Any) -> tuple[Any, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                           messages=messages, **kw)
    return raw.parse(), raw.headers


def test_repeat_is_a_hit_with_zero_upstream_calls(client: openai.OpenAI,
                                                  upstream: Server) -> None:
    msgs = _q()
    first, h1 = _create(client, msgs)
    before = _calls(upstream)
    second, h2 = _create(client, msgs)
    assert (h1["x-watchllm-cache"], h2["x-watchllm-cache"]) == ("MISS", "HIT")
    assert _calls(upstream) == before
    assert second.model_dump() == first.model_dump()
    assert int(h2["age"]) >= 0


def test_stream_then_json_then_stream(client: openai.OpenAI, upstream: Server) -> None:
    msgs = _q("stream first")
    streamed = list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs,
                                                   stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    before = _calls(upstream)
    reply, headers = _create(client, msgs)
    assert headers["x-watchllm-cache"] == "HIT" and _calls(upstream) == before
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == "stop"
    # Replayed stream: same chunks, usage only when asked for.
    again = list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                                stream_options={"include_usage": True}))
    assert [c.choices[0].delta.content for c in again if c.choices] == \
        [c.choices[0].delta.content for c in streamed if c.choices]
    assert again[-1].usage is not None and again[-1].usage.completion_tokens > 0
    assert _calls(upstream) == before


def test_json_then_stream_synthesised(client: openai.OpenAI, upstream: Server) -> None:
    msgs = _q("json first")
    reply, _ = _create(client, msgs)
    before = _calls(upstream)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs,
                                                 stream=True))
    assert _calls(upstream) == before
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_stream_replays_as_json(client: openai.OpenAI) -> None:
    msgs = _q("tools")
    extra = {"mock": {"tool_call": {"name": "lookup", "arguments": '{"q": "x"}'}}}
    list(client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                        extra_body=extra))
    reply, headers = _create(client, msgs, extra_body=extra)
    assert headers["x-watchllm-cache"] == "HIT"
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("lookup", '{"q": "x"}')
    assert reply.choices[0].finish_reason == "tool_calls"


async def test_concurrent_identical_misses_make_one_upstream_call(
        gateway: Server, api_key: str, upstream: Server) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    msgs = _q("herd")
    before = _calls(upstream)
    replies = await asyncio.gather(*(client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msgs, extra_body={"mock": {"latency_ms": 300}})
        for _ in range(50)))
    await client.close()
    assert _calls(upstream) == before + 1
    contents = {r.parse().choices[0].message.content for r in replies}
    assert len(contents) == 1
    assert sorted(r.headers["x-watchllm-cache"] for r in replies).count("MISS") == 1


def test_history_is_part_of_the_key(client: openai.OpenAI) -> None:
    last = {"role": "user", "content": f"and then? {uuid.uuid4().hex}"}
    a = [{"role": "user", "content": "story A"}, {"role": "assistant", "content": "A"}, last]
    b = [{"role": "user", "content": "story B"}, {"role": "assistant", "content": "B"}, last]
    assert _create(client, a)[1]["x-watchllm-cache"] == "MISS"
    assert _create(client, b)[1]["x-watchllm-cache"] == "MISS"


def test_projects_are_isolated(gateway: Server, client: openai.OpenAI) -> None:
    msgs = _q("isolation")
    _create(client, msgs)
    other = openai.OpenAI(base_url=gateway.url + "/v1", api_key=new_key(gateway, "other-proj"),
                          max_retries=0)
    assert _create(other, msgs)[1]["x-watchllm-cache"] == "MISS"
    assert _create(client, msgs)[1]["x-watchllm-cache"] == "HIT"


def test_no_cache_skips_read_but_refreshes(client: openai.OpenAI, upstream: Server) -> None:
    msgs = _q()
    _create(client, msgs)
    before = _calls(upstream)
    _, h = _create(client, msgs, extra_headers={"cache-control": "no-cache"})
    assert h["x-watchllm-cache"] == "MISS" and _calls(upstream) == before + 1


def test_no_store_does_not_write(client: openai.OpenAI) -> None:
    msgs = _q()
    assert _create(client, msgs, extra_headers={"cache-control": "no-store"})[1][
        "x-watchllm-cache"] == "MISS"
    assert _create(client, msgs)[1]["x-watchllm-cache"] == "MISS"
    assert _create(client, msgs)[1]["x-watchllm-cache"] == "HIT"


@pytest.mark.parametrize("ttl_header", [{"cache-control": "max-age=1"},
                                        {"x-watchllm-cache-ttl": "1"}])
def test_ttl(client: openai.OpenAI, ttl_header: dict[str, str]) -> None:
    msgs = _q()
    _create(client, msgs, extra_headers=ttl_header)
    assert _create(client, msgs)[1]["x-watchllm-cache"] == "HIT"
    time.sleep(1.2)
    assert _create(client, msgs)[1]["x-watchllm-cache"] == "MISS"


def test_namespace_and_mode_off(client: openai.OpenAI) -> None:
    msgs = _q()
    _create(client, msgs)
    ns = {"x-watchllm-cache-namespace": "tenant-7"}
    assert _create(client, msgs, extra_headers=ns)[1]["x-watchllm-cache"] == "MISS"
    assert _create(client, msgs, extra_headers=ns)[1]["x-watchllm-cache"] == "HIT"
    off = {"x-watchllm-cache-mode": "off"}
    assert _create(client, msgs, extra_headers=off)[1]["x-watchllm-cache"] == "BYPASS"


def test_body_controls_are_stripped(client: openai.OpenAI, upstream: Server) -> None:
    msgs = _q()
    body = {"watchllm": {"cache": {"namespace": "b", "no_store": True}}}
    assert _create(client, msgs, extra_body=body)[1]["x-watchllm-cache"] == "MISS"
    assert "watchllm" not in stats(upstream)["last_body"]
    assert _create(client, msgs, extra_body={"watchllm": {"cache": {"namespace": "b"}}})[1][
        "x-watchllm-cache"] == "MISS"  # no_store above: nothing was written


def test_bad_control_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="cache mode"):
        _create(client, _q(), extra_headers={"x-watchllm-cache-mode": "sometimes"})
    with pytest.raises(openai.BadRequestError, match="threshold"):
        _create(client, _q(), extra_headers={"x-watchllm-cache-threshold": "2"})


def test_errors_and_truncated_streams_are_not_cached(gateway: Server, api_key: str,
                                                     client: openai.OpenAI) -> None:
    msgs = _q()
    with pytest.raises(openai.BadRequestError):
        _create(client, msgs, extra_body={"mock": {"status": 400}})
    with pytest.raises(openai.BadRequestError):
        _create(client, msgs, extra_body={"mock": {"status": 400}})  # still not a HIT
    body = {"model": "gpt-4o-mini", "messages": msgs, "stream": True,
            "mock": {"chunk_delay_ms": 100, "chunks": 10}}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {api_key}"}) as r:
        next(r.iter_bytes())
    time.sleep(0.3)
    body["stream"] = False
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body,
                   headers={"authorization": f"Bearer {api_key}"})
    assert r.headers["x-watchllm-cache"] == "MISS"


def test_embeddings_are_cached(client: openai.OpenAI, upstream: Server) -> None:
    text = uuid.uuid4().hex
    first = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    second = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    assert (first.headers["x-watchllm-cache"], second.headers["x-watchllm-cache"]) == \
        ("MISS", "HIT")
    assert first.parse().data[0].embedding == second.parse().data[0].embedding


def test_purge_one_request_or_a_namespace_within_a_project(gateway: Server) -> None:
    from tests.e2e.conftest import ADMIN

    key = new_key(gateway, "purger", scopes=["proxy", "admin"])
    other = new_key(gateway, "purge-victim")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    victim = openai.OpenAI(base_url=gateway.url + "/v1", api_key=other, max_retries=0)
    a, b = _q("purge a"), _q("purge b")
    ns = {"x-watchllm-cache-namespace": "purge-ns"}
    for msgs in (a, b):
        _create(client, msgs)
        _create(client, msgs, extra_headers=ns)
    _create(victim, a)

    def purge(token: str, **body: Any) -> httpx.Response:
        return httpx.post(gateway.url + "/v1/cache/purge", json=body,
                          headers={"authorization": f"Bearer {token}"})

    r = purge(key, request={"model": "gpt-4o-mini", "messages": a})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert _create(client, a)[1]["x-watchllm-cache"] == "MISS"  # gone (and stored again)
    assert _create(client, b)[1]["x-watchllm-cache"] == "HIT"  # untouched
    assert purge(key, namespace="purge-ns").json()["deleted"] == 2
    assert _create(client, a, extra_headers=ns)[1]["x-watchllm-cache"] == "MISS"
    assert _create(victim, a)[1]["x-watchllm-cache"] == "HIT"  # other projects untouched
    assert purge(other, namespace="x").status_code == 403  # no admin scope
    assert purge(ADMIN, namespace="x").status_code == 400  # the admin key names a project


@pytest.fixture(scope="module")
def two_replicas(upstream: Server,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    import redis

    from tests.e2e.conftest import gateway_env, postgres_database
    from watchllm.testing.servers import start_gateway

    redis.Redis.from_url("redis://127.0.0.1:6379/11").flushdb()
    with postgres_database() as url:
        env = gateway_env(upstream, WATCHLLM_MODE="self_hosted", WATCHLLM_DATABASE_URL=url,
                          WATCHLLM_REDIS_URL="redis://127.0.0.1:6379/11",
                          WATCHLLM_CLICKHOUSE_URL="off", WATCHLLM_AUTO_MIGRATE="true")
        servers = [start_gateway(tmp_path_factory.mktemp(f"sf{i}"), env) for i in range(2)]
        yield servers
        for s in servers:
            s.stop()


async def test_single_flight_across_processes(two_replicas: list[Server],
                                              upstream: Server) -> None:
    key = new_key(two_replicas[0], "herd-2")
    msgs = _q("cross-process herd")
    before = _calls(upstream)

    async def one(client: httpx.AsyncClient, server: Server) -> httpx.Response:
        return await client.post(server.url + "/v1/chat/completions",
                                 headers={"authorization": f"Bearer {key}"},
                                 json={"model": "gpt-4o-mini", "messages": msgs,
                                       "mock": {"latency_ms": 500}})

    async with httpx.AsyncClient(timeout=30) as client:
        replies = await asyncio.gather(*(one(client, two_replicas[i % 2]) for i in range(20)))
    assert [r.status_code for r in replies] == [200] * 20
    assert _calls(upstream) == before + 1
    assert len({r.json()["choices"][0]["message"]["content"] for r in replies}) == 1
