"""A project's own provider keys (stored encrypted) are what its requests use upstream."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import admin, gateway_env, new_key, stats
from watchllm.testing.servers import Server, start_gateway


def _master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def gateway_with_master_key(upstream: Server,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_gateway(tmp_path_factory.mktemp("pkeys"),
                           gateway_env(upstream, WATCHLLM_MASTER_KEY=_master_key()))
    yield server
    server.stop()


def _project_id(gw: Server, name: str) -> str:
    listing = admin(gw, "GET", "/v1/admin/projects").json()["data"]
    return str(next(p["id"] for p in listing if p["name"] == name))


def _put_keys(gw: Server, project: str, keys: dict[str, str]) -> None:
    pid = _project_id(gw, project)
    for provider, secret in keys.items():
        r = admin(gw, "POST", f"/v1/admin/projects/{pid}/provider-keys",
                  json={"provider": provider, "key": secret})
        assert r.status_code == 201, r.text
        assert secret not in r.text  # shown as a hint only


def _ask(client: openai.OpenAI, model: str) -> None:
    client.chat.completions.create(model=model, messages=[
        {"role": "user", "content": uuid.uuid4().hex}])


def test_project_keys_win_over_global_keys(gateway_with_master_key: Server,
                                           upstream: Server) -> None:
    gw = gateway_with_master_key
    own_key, other_key = new_key(gw, "own-keys"), new_key(gw, "global-keys")
    _put_keys(gw, "own-keys", {"openai": "sk-project-own", "anthropic": "ak-project-own"})
    own = openai.OpenAI(base_url=gw.url + "/v1", api_key=own_key, max_retries=0)
    other = openai.OpenAI(base_url=gw.url + "/v1", api_key=other_key, max_retries=0)

    _ask(own, "gpt-4o-mini")
    assert stats(upstream)["last_headers"]["authorization"] == "Bearer sk-project-own"
    _ask(other, "gpt-4o-mini")
    assert stats(upstream)["last_headers"]["authorization"] == \
        "Bearer sk-upstream-secret-never-shown"
    _ask(own, "claude-sonnet-4-5")
    assert stats(upstream)["last_headers"]["x-api-key"] == "ak-project-own"
    _ask(other, "claude-sonnet-4-5")
    assert stats(upstream)["last_headers"]["x-api-key"] == "ak-upstream-secret"
    pid = _project_id(gw, "own-keys")
    assert admin(gw, "DELETE", f"/v1/admin/projects/{pid}/provider-keys/openai"
                 ).status_code == 200
    _ask(own, "gpt-4o-mini")  # this worker forgot the key at once
    assert stats(upstream)["last_headers"]["authorization"] == \
        "Bearer sk-upstream-secret-never-shown"


def test_a_project_key_unlocks_a_provider_without_a_global_key(
        upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Anthropic at its official URL with no global key: unusable, except for a project
    # with its own key (that request is routed; it fails only because there is no network).
    env = gateway_env(upstream, WATCHLLM_MASTER_KEY=_master_key(), ANTHROPIC_API_KEY="",
                      ANTHROPIC_BASE_URL="", WATCHLLM_MAX_RETRIES="0")
    gw = start_gateway(tmp_path_factory.mktemp("unlock"), env)
    try:
        own_key, other_key = new_key(gw, "own"), new_key(gw, "other")
        _put_keys(gw, "own", {"anthropic": "ak-project-own"})
        own = openai.OpenAI(base_url=gw.url + "/v1", api_key=own_key, max_retries=0)
        other = openai.OpenAI(base_url=gw.url + "/v1", api_key=other_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as routed:
            _ask(own, "anthropic/claude-sonnet-4-5")
        assert routed.value.status_code == 502 and "anthropic.com" in routed.value.message
        with pytest.raises(openai.NotFoundError, match="ANTHROPIC_API_KEY"):
            _ask(other, "anthropic/claude-sonnet-4-5")
    finally:
        gw.stop()
