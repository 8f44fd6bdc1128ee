"""Semantic cache through the real server: local all-MiniLM-L6-v2 embeddings + verification."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import gateway_env, new_key
from watchllm.testing.servers import Server, start_gateway

pytest.importorskip("all_minilm_l6_v2", reason="local embedding model package not installed")


@pytest.fixture(scope="module")
def semantic_client(upstream: Server,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    env = gateway_env(upstream, WATCHLLM_SEMANTIC_CACHE="true")
    server = start_gateway(tmp_path_factory.mktemp("semantic"), env)
    yield openai.OpenAI(base_url=server.url + "/v1", api_key=new_key(server, "sem"),
                        max_retries=0)
    server.stop()


def _ask(client: openai.OpenAI, question: str, ns: str, **headers: str) -> tuple[str, dict]:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
        extra_headers={"x-watchllm-cache-namespace": ns, **headers})
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def test_paraphrase_hits_and_hard_negatives_miss(semantic_client: openai.OpenAI) -> None:
    ns = uuid.uuid4().hex
    answer, h = _ask(semantic_client, "What is the capital of France?", ns)
    assert h["x-watchllm-cache"] == "MISS"
    again, h = _ask(semantic_client, "Which city is the capital of France?", ns)
    assert h["x-watchllm-cache"] == "SEMANTIC_HIT" and again == answer
    assert 0.8 <= float(h["x-watchllm-cache-similarity"]) <= 1.0
    for negative in ("What is the capital of Germany?", "What is not the capital of France?"):
        assert _ask(semantic_client, negative, ns)[1]["x-watchllm-cache"] == "MISS"


def test_direction_and_numbers_are_verified(semantic_client: openai.OpenAI) -> None:
    ns = uuid.uuid4().hex
    _ask(semantic_client, "How do I convert a string to an int in Python?", ns)
    assert _ask(semantic_client, "How do I convert an int to a string in Python?", ns)[1][
        "x-watchllm-cache"] == "MISS"
    # Each pair below is above the cosine threshold (0.98-0.998 with this model): only the
    # verification step keeps them apart.
    _ask(semantic_client, "How many km is 5 miles?", ns)
    assert _ask(semantic_client, "How many miles is 5 km?", ns)[1]["x-watchllm-cache"] == "MISS"
    _ask(semantic_client, "Convert 100 USD to EUR", ns)
    assert _ask(semantic_client, "Convert 100 EUR to USD", ns)[1]["x-watchllm-cache"] == "MISS"


def test_exact_mode_request_skips_semantic(semantic_client: openai.OpenAI) -> None:
    ns = uuid.uuid4().hex
    _ask(semantic_client, "Name three primary colours", ns)
    _, h = _ask(semantic_client, "name 3 primary colors", ns, **{"x-watchllm-cache-mode": "exact"})
    assert h["x-watchllm-cache"] == "MISS"
