"""Limits through real gateway processes: one embedded, and two self-hosted replicas that
share PostgreSQL and Redis and must enforce one limit between them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import admin, gateway_env, new_key, postgres_database
from watchllm.testing.servers import Server, start_gateway

REDIS_DB = "redis://127.0.0.1:6379/13"


def _msg() -> list[dict[str, str]]:
    return [{"role": "user", "content": uuid.uuid4().hex}]


def test_rpm_429_in_openai_shape_with_headers(limited: Server) -> None:
    key = new_key(limited, "rpm")
    results = [httpx.post(limited.url + "/v1/chat/completions",
                          json={"model": "gpt-4o-mini", "messages": _msg()},
                          headers={"authorization": f"Bearer {key}"}) for _ in range(7)]
    assert [r.status_code for r in results] == [200] * 5 + [429] * 2
    ok, denied = results[0], results[5]
    # WatchLLM's limits in place of the provider's (the mock sends OpenAI's own set too)
    assert ok.headers.get_list("x-ratelimit-limit-requests") == ["5"]
    assert ok.headers.get_list("x-ratelimit-remaining-requests") == ["4"]
    assert ok.headers.get_list("x-ratelimit-limit-tokens") == ["100000"]
    assert len(ok.headers.get_list("x-ratelimit-reset-tokens")) == 1
    assert ok.headers["openai-processing-ms"] == "312"  # the rest of the provider's kept
    assert float(denied.headers["retry-after"]) > 0
    assert denied.headers["x-ratelimit-remaining-requests"] == "0"
    assert denied.json()["error"]["type"] == "rate_limit_error"


def test_sdk_retries_after_retry_after_and_succeeds(limited: Server) -> None:
    key = new_key(limited, "sdk-retry")
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=key, max_retries=0)
    for _ in range(5):
        client.chat.completions.create(model="gpt-4o-mini", messages=_msg())
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=_msg())
    # 5 rpm refills one request every 12 s; the SDK waits Retry-After (<= 60 s) and retries.
    patient = openai.OpenAI(base_url=limited.url + "/v1", api_key=key, max_retries=2)
    assert patient.chat.completions.create(model="gpt-4o-mini", messages=_msg()).choices


@pytest.fixture(scope="module")
def replicas(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    import redis

    redis.Redis.from_url(REDIS_DB).flushdb()
    with postgres_database() as url:
        env = gateway_env(upstream, WATCHLLM_MODE="self_hosted", WATCHLLM_DATABASE_URL=url,
                          WATCHLLM_REDIS_URL=REDIS_DB, WATCHLLM_CLICKHOUSE_URL="off",
                          WATCHLLM_AUTO_MIGRATE="true", WATCHLLM_DEFAULT_RPM="10")
        servers = [start_gateway(tmp_path_factory.mktemp(f"replica{i}"), env) for i in range(2)]
        yield servers
        for s in servers:
            s.stop()


async def test_two_replicas_enforce_one_limit_exactly(replicas: list[Server]) -> None:
    key = new_key(replicas[0], "shared")  # created on one replica, used on both

    async def one(client: httpx.AsyncClient, url: str) -> int:
        r = await client.post(url + "/v1/chat/completions",
                              json={"model": "gpt-4o-mini", "messages": _msg()},
                              headers={"authorization": f"Bearer {key}"})
        return r.status_code

    async with httpx.AsyncClient(timeout=30) as client:
        codes = await asyncio.gather(*(one(client, replicas[i % 2].url) for i in range(40)))
    assert codes.count(200) == 10 and codes.count(429) == 30


async def test_two_replicas_exact_with_prefetched_capacity(replicas: list[Server]) -> None:
    """A key of 600 rpm is large enough for prefetch (limits/prefetch.py). Replica B takes
    prefetches for 30 requests, then replica A sends 800: between them exactly the
    limit is admitted, plus what refilled while they ran (10 per second) — never more, and
    never fewer because B held capacity it did not use."""
    created = admin(replicas[0], "POST", "/v1/admin/projects", json={"name": "prefetch"})
    record = admin(replicas[0], "POST", "/v1/admin/keys",
                   json={"project_id": created.json()["id"]}).json()
    patched = admin(replicas[0], "PATCH", f"/v1/admin/keys/{record['id']}",
                    json={"limits": {"rpm": 600}})
    assert patched.status_code == 200, patched.text

    async def wave(client: httpx.AsyncClient, url: str, n: int) -> list[int]:
        async def one() -> int:
            r = await client.post(url + "/v1/chat/completions",
                                  json={"model": "gpt-4o-mini", "messages": _msg()},
                                  headers={"authorization": f"Bearer {record['key']}"})
            return r.status_code
        return list(await asyncio.gather(*(one() for _ in range(n))))

    codes: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        started = time.monotonic()
        for _ in range(3):
            codes += await wave(client, replicas[1].url, 10)
        for _ in range(16):
            codes += await wave(client, replicas[0].url, 50)
        elapsed = time.monotonic() - started
        metrics = [(await client.get(s.url + "/metrics")).text for s in replicas]
    assert set(codes) <= {200, 429}
    assert 600 <= codes.count(200) <= 600 + int(elapsed * 10) + 1, (codes.count(200), elapsed)
    for text in metrics:  # both replicas took prefetches
        assert 'watchllm_limits_prefetch_total{event="granted"}' in text


def test_cache_is_shared_across_replicas(replicas: list[Server]) -> None:
    key = new_key(replicas[0], "cache-shared")
    msgs = _msg()
    a, b = (openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0) for s in replicas)
    first = a.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    second = b.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    assert (first.headers["x-watchllm-cache"], second.headers["x-watchllm-cache"]) == \
        ("MISS", "HIT")


def test_redis_down_requests_still_succeed_and_outage_is_visible(
        upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    from watchllm.testing.servers import free_port

    with postgres_database() as url:
        env = gateway_env(upstream, WATCHLLM_MODE="self_hosted", WATCHLLM_DATABASE_URL=url,
                          WATCHLLM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                          WATCHLLM_CLICKHOUSE_URL="off", WATCHLLM_AUTO_MIGRATE="true",
                          WATCHLLM_DEFAULT_RPM="1000")
        server = start_gateway(tmp_path_factory.mktemp("noredis"), env)
        try:
            client = openai.OpenAI(base_url=server.url + "/v1",
                                   api_key=new_key(server, "nr"), max_retries=0)
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                   messages=_msg())
            assert raw.parse().choices[0].message.content
            assert raw.headers["x-watchllm-cache"] == "MISS"
            ready = httpx.get(server.url + "/ready")
            assert ready.status_code == 503 and "redis" in ready.json()["failing"]
            metrics = httpx.get(server.url + "/metrics").text
            assert 'watchllm_backend_up{backend="redis"} 0.0' in metrics
        finally:
            server.stop()
