"""Real servers for end-to-end tests: the gateway and a mock provider, both under granian."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from watchllm.testing.servers import Server, start_gateway, start_mock_upstream

ADMIN = "admin-test-key"


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mock_upstream(tmp_path_factory.mktemp("mock"), provider_headers=True)
    yield server
    server.stop()


def gateway_env(upstream: Server, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": upstream.url + "/v1",
        "OPENAI_API_KEY": "sk-upstream-secret-never-shown",
        "ANTHROPIC_BASE_URL": upstream.url,
        "ANTHROPIC_API_KEY": "ak-upstream-secret",
        "WATCHLLM_ADMIN_KEY": ADMIN,
        "WATCHLLM_MAX_RETRIES": "2",
        "WATCHLLM_RETRY_BACKOFF": "0.01",
        "WATCHLLM_MAX_BODY_BYTES": "200000",
        "WATCHLLM_KEY_CACHE_TTL": "1",
        "WATCHLLM_FALLBACKS": "gpt-broken=gpt-4o-mini",
        **extra,
    }


@pytest.fixture(scope="session")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_gateway(tmp_path_factory.mktemp("gw"), gateway_env(upstream))
    yield server
    server.stop()


def admin(gateway: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, gateway.url + path, headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=10, **kw)


def new_key(gateway: Server, project: str, **fields: Any) -> str:
    r = admin(gateway, "POST", "/v1/admin/projects", json={"name": project})
    if r.status_code == 201:
        project_id = r.json()["id"]
    else:
        listing = admin(gateway, "GET", "/v1/admin/projects").json()["data"]
        project_id = next(p["id"] for p in listing if p["name"] == project)
    r = admin(gateway, "POST", "/v1/admin/keys", json={"project_id": project_id, **fields})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="session")
def api_key(gateway: Server) -> str:
    return new_key(gateway, "e2e")


@pytest.fixture
def client(gateway: Server, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)


@pytest.fixture
def aclient(gateway: Server, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)


PG = "postgresql://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (its URL), dropped afterwards."""
    name = f"watchllm_e2e_{uuid.uuid4().hex[:8]}"

    async def run(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(f"{PG}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        yield f"{PG}/{name}"
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def stats(upstream: Server) -> dict[str, Any]:
    return dict(httpx.get(upstream.url + "/_mock/stats", timeout=5).json())


def assert_disconnect_cancels_upstream(gateway: Server, key: str, upstream: Server) -> None:
    """A client that leaves mid-stream makes the gateway cancel its upstream request."""
    import time

    before = stats(upstream)["cancelled"]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
            "stream": True, "mock": {"chunk_delay_ms": 200, "chunks": 20}}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=10) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    deadline = time.monotonic() + 3
    while stats(upstream)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(upstream)["cancelled"] == before + 1


@pytest.fixture(scope="module")
def limited(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway whose keys get 5 requests and 100k tokens per minute by default."""
    env = gateway_env(upstream, WATCHLLM_DEFAULT_RPM="5", WATCHLLM_DEFAULT_TPM="100000")
    server = start_gateway(tmp_path_factory.mktemp("limited"), env)
    yield server
    server.stop()
