"""The gateway under granian's ASGI interface (the default is RSGI; every other e2e test runs
that): the same app must behave the same through either — answers, streams, a client that
leaves mid-stream, errors, and the SIGTERM drain."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env, new_key, stats
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
    key = new_key(asgi_gateway, "asgi")
    before = stats(upstream)["cancelled"]
    body = {"model": "gpt-4o-mini", "messages": MSG, "stream": True,
            "mock": {"chunk_delay_ms": 200, "chunks": 20}}
    with httpx.stream("POST", asgi_gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=10) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    deadline = time.monotonic() + 3
    while stats(upstream)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(upstream)["cancelled"] == before + 1


def test_sigterm_drains_in_flight_requests(upstream: Server,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    env = gateway_env(upstream, WATCHLLM_SERVER_INTERFACE="asgi")
    server = start_gateway(tmp_path_factory.mktemp("asgi-drain"), env)
    key = new_key(server, "drain")
    results: list[int] = []

    def slow_request() -> None:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o-mini", "mock": {"latency_ms": 1500},
                             "messages": [{"role": "user", "content": uuid.uuid4().hex}]})
        results.append(r.status_code)

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(10)
    assert results == [200]
    assert server.proc.wait(20) == 0
