"""The gateway under granian's ASGI interface (the default is RSGI; every other e2e test runs
that): the same app must behave the same through either — answers, streams, a client that
leaves mid-stream, errors (the SIGTERM drain under both: test_lifecycle.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import assert_disconnect_cancels_upstream, gateway_env, new_key
from watchllm.testing.servers import Server, start_gateway

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def asgi_gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = gateway_env(upstream, WATCHLLM_SERVER_INTERFACE="asgi")
    server = start_gateway(tmp_path_factory.mktemp("asgi"), env)
    yield server
    server.stop()


def test_chat_stream_and_errors(asgi_gateway: Server) -> None:
    key = new_key(asgi_gateway, "asgi")
    client = openai.OpenAI(base_url=asgi_gateway.url + "/v1", api_key=key, max_retries=0)
    msgs = [{"role": "user", "content": uuid.uuid4().hex}]
    reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    assert reply.headers["x-watchllm-cache"] == "MISS" and reply.parse().choices
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                 extra_headers={"x-watchllm-cache-mode": "off"}))
    assert chunks[-1].choices[0].finish_reason == "stop"
    for _ in range(3):  # repeats: the remembered-request path
        again = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                 messages=msgs)
        assert again.headers["x-watchllm-cache"] == "HIT"
        assert again.parse().model_dump() == reply.parse().model_dump()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=asgi_gateway.url + "/v1", api_key="wl_bad",
                      max_retries=0).models.list()


def test_client_disconnect_cancels_upstream(asgi_gateway: Server, upstream: Server) -> None:
    assert_disconnect_cancels_upstream(asgi_gateway, new_key(asgi_gateway, "asgi"), upstream)
