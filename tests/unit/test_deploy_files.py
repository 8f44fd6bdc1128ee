"""The Docker deployment files agree with the code (no engine runs here to build them)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from watchllm.settings import load_settings

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"


def test_compose_gateway_environment_is_valid_settings() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    env = {k: re.sub(r"\$\{[^}]*\}", "x", str(v))
           for k, v in services["gateway"]["environment"].items()}
    settings = load_settings(env, dotenv=None)  # raises, naming the variable, if invalid
    assert settings.mode == "self_hosted" and settings.auto_migrate
    for url, host in ((settings.database_url, "postgres"), (settings.redis_url, "redis"),
                      (settings.clickhouse_url, "clickhouse")):
        assert f"@{host}:" in url or f"//{host}:" in url
        assert host in services and host in services["gateway"]["depends_on"]
    assert all("healthcheck" in services[s] for s in ("postgres", "redis", "clickhouse"))


def test_dockerfile_builds_what_the_package_needs() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    for path in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "rust_core", "watchllm"):
        assert f"COPY {path}" in text or f" {path} " in text
        assert (DOCKER.parents[1] / path).exists()
    assert 'CMD ["watchllm", "serve"]' in text and "USER watchllm" in text
