"""Every failure reaches the client in OpenAI's error shape with the right status."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import admin, gateway_env, new_key, stats
from watchllm.testing.servers import Server, free_port, start_gateway

MSG = [{"role": "user", "content": "hi"}]


def _error(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text
    return dict(body["error"])


def test_missing_and_wrong_key(gateway: Server) -> None:
    for key in ("", "sk-wrong", "wl_aaaaaaaaaaaa_" + "x" * 40):
        c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key or "none", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "x", "messages": MSG})
    assert r.status_code == 401 and _error(r)["type"] == "authentication_error"


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": []}', "model"),
    (b'{"model": 5, "messages": []}', "model"),
    (b'{"model": "gpt-4o-mini"}', "messages"),
    (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
    (b'{"model": "gpt-4o-mini", "messages": [3]}', "messages[0]"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
])
def test_bad_requests(gateway: Server, api_key: str, body: bytes, param: str | None) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                   headers={"authorization": f"Bearer {api_key}",
                            "content-type": "application/json"})
    assert r.status_code == 400
    err = _error(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert r.headers["x-request-id"]


def test_oversized_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "x" * 300_000}])
    assert info.value.status_code == 413
    assert "limit" in str(info.value)


def test_oversized_chunked_body_is_a_413(gateway: Server, api_key: str) -> None:
    """No Content-Length (a chunked upload): the limit still applies (the RSGI entry reads
    such a body piece by piece, so the app stops it before it is all in memory)."""
    sent = 0

    def pieces() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(4_000):  # up to 64 MB, far past the 200 kB limit
            sent += 16_384
            yield b"x" * 16_384
        yield b'"}]}'

    try:
        r = httpx.post(gateway.url + "/v1/chat/completions", content=pieces(), timeout=30,
                       headers={"authorization": f"Bearer {api_key}",
                                "content-type": "application/json"})
    except httpx.HTTPError:  # the server may answer and close while we are still sending
        return
    assert r.status_code == 413, r.text
    assert _error(r)["type"] == "invalid_request_error"


def test_unknown_endpoint(gateway: Server, api_key: str) -> None:
    r = httpx.get(gateway.url + "/v1/nope", headers={"authorization": f"Bearer {api_key}"})
    assert r.status_code == 404 and _error(r)["type"] == "not_found_error"


def test_upstream_4xx_passes_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_body={
            "mock": {"status": 404, "error": "The model `x` does not exist"}})
    assert "does not exist" in str(info.value)


def test_upstream_5xx_is_502_with_upstream_status(client: openai.OpenAI,
                                                  upstream: Server) -> None:
    before = stats(upstream)["total"]
    raw = client.chat.completions.with_raw_response
    with pytest.raises(openai.APIStatusError) as info:
        raw.create(model="gpt-4o-mini", messages=MSG,
                   extra_body={"mock": {"status": 503, "error": "overloaded"}})
    assert info.value.status_code == 502
    assert "503" in info.value.message and "overloaded" in info.value.message
    assert info.value.response.headers["x-watchllm-upstream-status"] == "503"
    assert stats(upstream)["total"] == before + 3  # one try + two retries


def test_retry_after_429_then_success(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_body={
        "mock": {"status": 429, "retry_after": 0.2, "fail_first": 1, "fail_key": "r429"}})
    assert reply.choices[0].message.content


def test_long_retry_after_goes_to_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_body={
            "mock": {"status": 429, "retry_after": 60}})
    assert info.value.response.headers["retry-after"] == "60"


def test_fallback_model(client: openai.OpenAI, upstream: Server) -> None:
    reply = client.chat.completions.create(model="gpt-broken", messages=MSG, extra_body={
        "mock": {"status": 500, "fail_first": 3, "fail_key": "fallback"}})
    assert reply.model == "gpt-4o-mini"
    assert stats(upstream)["last_body"]["model"] == "gpt-4o-mini"


@pytest.fixture(scope="module")
def broken_gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Provider `down` points at a closed port; reads time out after 0.5 s."""
    env = gateway_env(upstream, WATCHLLM_READ_TIMEOUT="0.5", WATCHLLM_MAX_RETRIES="1",
                      WATCHLLM_PROVIDERS=f"down=http://127.0.0.1:{free_port()}/v1")
    server = start_gateway(tmp_path_factory.mktemp("broken"), env)
    yield server
    server.stop()


def test_unreachable_provider_is_502(broken_gateway: Server) -> None:
    c = openai.OpenAI(base_url=broken_gateway.url + "/v1", api_key=new_key(broken_gateway, "b"),
                      max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="down/some-model", messages=MSG)
    assert info.value.status_code == 502 and "unreachable" in info.value.message


def test_upstream_timeout_is_504(broken_gateway: Server) -> None:
    c = openai.OpenAI(base_url=broken_gateway.url + "/v1", api_key=new_key(broken_gateway, "b"),
                      max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                  extra_body={"mock": {"latency_ms": 3000}})
    assert info.value.status_code == 504


def test_unknown_provider_prefix_and_keyless_provider(tmp_path_factory: pytest.TempPathFactory,
                                                      upstream: Server) -> None:
    env = gateway_env(upstream, ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL="")
    server = start_gateway(tmp_path_factory.mktemp("nokey"), env)
    try:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=new_key(server, "n"),
                          max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=MSG)
        assert "ANTHROPIC_API_KEY" in info.value.message
    finally:
        server.stop()


def test_revoked_key_stops_working(gateway: Server) -> None:
    key = new_key(gateway, "revoke-me")
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    key_id = key.split("_")[1]
    assert admin(gateway, "POST", f"/v1/admin/keys/{key_id}/revoke").status_code == 200
    time.sleep(1.1)  # WATCHLLM_KEY_CACHE_TTL=1 in these tests
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_admin_api_needs_admin_key(gateway: Server, api_key: str) -> None:
    r = httpx.get(gateway.url + "/v1/admin/projects",
                  headers={"authorization": f"Bearer {api_key}"})
    assert r.status_code == 403 and _error(r)["type"] == "permission_error"
    listing = admin(gateway, "GET", "/v1/admin/keys").json()["data"]
    assert listing and all("key" not in k and "key_hash" not in k for k in listing)


def test_provider_keys_never_reach_clients_or_logs(gateway: Server, client: openai.OpenAI) -> None:
    secret = "sk-upstream-secret-never-shown"
    responses = [
        httpx.post(gateway.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": MSG, "mock": {"status": status}},
            headers={"authorization": client.api_key and f"Bearer {client.api_key}"})
        for status in (400, 401, 503)
    ]
    for r in responses:
        assert secret not in r.text and all(secret not in v for v in r.headers.values())
    assert secret not in gateway.output()
