from __future__ import annotations

from pathlib import Path

import pytest

from watchllm.settings import SettingsError, load_settings


def test_defaults_without_keys_route_to_mock() -> None:
    s = load_settings({}, dotenv=None)
    assert s.mode == "embedded" and s.default_provider == "mock" and s.port == 8080
    assert s.provider("openai") is not None and s.provider("openai").base_url == \
        "https://api.openai.com/v1"


def test_openai_conventions() -> None:
    s = load_settings({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h:1/v1/"}, None)
    openai = s.provider("openai")
    assert openai is not None
    assert (s.default_provider, openai.base_url, openai.api_key) == ("openai", "http://h:1/v1",
                                                                     "sk-x")
    assert "sk-x" not in repr(s)  # keys never printed


def test_extra_providers_routes_fallbacks() -> None:
    s = load_settings({"WATCHLLM_PROVIDERS": "local=http://127.0.0.1:8000/v1",
                       "WATCHLLM_PROVIDER_LOCAL_API_KEY": "k",
                       "WATCHLLM_ROUTES": "llama*=local",
                       "WATCHLLM_FALLBACKS": "gpt-4o=gpt-4o-mini|claude-x"}, None)
    local = s.provider("local")
    assert local is not None and local.api_key == "k"
    assert s.routes == (("llama*", "local"),)
    assert s.fallbacks == (("gpt-4o", ("gpt-4o-mini", "claude-x")),)


@pytest.mark.parametrize(("env", "names"), [
    ({"WATCHLLM_PORT": "eighty"}, "WATCHLLM_PORT"),
    ({"WATCHLLM_PORT": "70000"}, "WATCHLLM_PORT"),
    ({"WATCHLLM_MODE": "cloud"}, "WATCHLLM_MODE"),
    ({"WATCHLLM_REQUIRE_AUTH": "maybe"}, "WATCHLLM_REQUIRE_AUTH"),
    ({"OPENAI_BASE_URL": "api.openai.com"}, "OPENAI_BASE_URL"),
    ({"WATCHLLM_ROUTES": "llama*=nowhere"}, "nowhere"),
    ({"WATCHLLM_FALLBACKS": "gpt-4o"}, "WATCHLLM_FALLBACKS"),
    ({"WATCHLLM_READ_TIMEOUT": "0"}, "WATCHLLM_READ_TIMEOUT"),
])
def test_invalid_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(env, None)


def test_dotenv_under_environment(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text("# comment\nexport WATCHLLM_PORT=9000\nWATCHLLM_HOST='0.0.0.0'\n")
    s = load_settings({"WATCHLLM_PORT": "9100"}, f)
    assert (s.port, s.host) == (9100, "0.0.0.0")
