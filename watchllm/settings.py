"""Typed settings, read from the environment (and an optional `.env` file) in one place.

Provider settings use the names the SDKs already use (`OPENAI_API_KEY`, `OPENAI_BASE_URL`,
`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`); everything of WatchLLM's own is `WATCHLLM_*`.
`.env.example` documents every variable with its default. An invalid value raises
`SettingsError` naming the variable, which stops start-up.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["embedded", "self_hosted", "cloudflare"]
_MODES = ("embedded", "self_hosted", "cloudflare")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: Literal["openai", "anthropic", "mock"]
    base_url: str
    api_key: str = field(default="", repr=False)  # never printed


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = "embedded"
    data_dir: Path = Path(".watchllm")
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # How granian calls the app: its native RSGI (cheaper per request) or ASGI. The app is
    # ASGI either way; rsgi adds a thin translation (watchllm/entrypoints/rsgi.py).
    interface: Literal["rsgi", "asgi"] = "rsgi"
    # Run the server's threads under SCHED_BATCH (Linux): a woken thread does not preempt
    # the running one, so granian's I/O thread and the Python thread switch far less
    # often (watchllm/scheduling.py).
    sched_batch: bool = True
    # Run event shipping under SCHED_IDLE: the pipeline's encoder, the ClickHouse insert
    # and query threads and the in-process engine (chDB) yield to requests at once on a
    # busy core (watchllm/scheduling.py). Events are durable in the spool before that.
    analytics_idle: bool = True
    database_url: str = ""  # default: sqlite in data_dir
    redis_url: str = ""
    clickhouse_url: str = ""  # default: chdb in data_dir (embedded), empty = analytics off
    admin_key: str = field(default="", repr=False)
    require_auth: bool = True
    max_body_bytes: int = 32 * 1024 * 1024
    key_cache_ttl_s: float = 5.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0
    max_retries: int = 2
    retry_backoff_s: float = 0.5
    upstream_pool_size: int = 256
    default_provider: str = ""  # default: openai if OPENAI_API_KEY is set, else mock
    routes: tuple[tuple[str, str], ...] = ()  # (model glob, provider)
    fallbacks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # model -> alternatives
    providers: tuple[ProviderSettings, ...] = ()
    mock_latency_ms: float = 0.0
    # Response cache (docs/cache.md).
    cache_enabled: bool = True
    cache_ttl_s: float = 86400.0
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_multi_choice: str = "bypass"  # n > 1: bypass | cache
    cache_max_temperature: float | None = None  # above it: bypass; None: no bound
    cache_lock_wait_s: float = 30.0
    semantic_cache: bool = False
    semantic_threshold: float = 0.80  # chosen on tests/data (docs/semantic-cache.md)
    embedding_model: str = "local/all-minilm-l6-v2"
    events_buffer: int = 100_000
    log_level: str = "info"
    auto_migrate: bool = False  # apply pending metadata migrations at start-up
    # Event pipeline and self-hosted backends (docs/pipeline.md).
    spool_dir: Path | None = None  # default: data_dir / "spool"
    events_batch_size: int = 20_000  # flush to ClickHouse at N events...
    events_flush_ms: float = 1000.0  # ...or after T ms, whichever comes first
    # Under load the spool writer gathers what arrives in this long into one record: the
    # most a killed process can lose, against one writer wake-up per record.
    events_linger_ms: float = 5.0
    spool_max_bytes: int = 1 << 30  # events not yet in ClickHouse, on disk
    pg_pool_size: int = 10
    redis_fail_mode: Literal["open", "closed"] = "open"  # open: degrade to in-process
    event_ttl_days: int = 90  # raw events; 0 keeps them forever
    # Limits, prices, provider keys (docs/limits.md, docs/pricing.md). Per-key rate defaults
    # apply when neither the key nor its project's plan sets one; None = unlimited.
    default_rpm: int | None = None
    default_tpm: int | None = None
    default_max_concurrent: int | None = None
    limits_fail_mode: Literal["open", "closed"] = "open"  # when the counters backend is down
    limits_timeout_s: float = 1.0  # one limits round trip; slower counts as backend down
    limits_lease_s: float = 900.0  # a concurrency slot frees itself after this (crashed worker)
    limits_prefetch_ms: int = 100  # shared counters: rate capacity taken ahead, kept this long
    prices_file: str = ""  # JSON merged over the shipped price table
    master_key: str = field(default="", repr=False)  # AES-256-GCM key for provider keys
    master_key_previous: tuple[str, ...] = field(default=(), repr=False)  # rotation: old keys
    # Ingest API (docs/analytics.md): one batch at most this many events and bytes; a
    # request waits at most ingest_durable_timeout_s for its events to become durable.
    ingest_max_events: int = 1000
    ingest_max_bytes: int = 10 * 1024 * 1024
    ingest_durable_timeout_s: float = 10.0
    # Self-hosted semantic-cache vectors (pgvector, docs/cache.md): a postgresql:// URL,
    # "" = the metadata database when it has the extension, "off" = no semantic cache.
    vector_url: str = field(default="", repr=False)

    def provider(self, name: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == name), None)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, `export`, single/double quotes)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str = "") -> str:
        return self.env.get(name, default).strip() or default

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {raw}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    def pairs(self, name: str) -> list[tuple[str, str]]:
        """`a=b,c=d` -> [(a, b), (c, d)]."""
        raw = self.env.get(name, "").strip()
        out = []
        for item in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise SettingsError(f"{name}: expected KEY=VALUE items, got {item!r}")
            out.append((key.strip(), value.strip()))
        return out


def _url(name: str, value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _providers(r: _Reader) -> tuple[ProviderSettings, ...]:
    providers = [
        ProviderSettings(
            "openai",
            "openai",
            _url("OPENAI_BASE_URL", r.text("OPENAI_BASE_URL", "https://api.openai.com/v1")),
            r.text("OPENAI_API_KEY"),
        ),
        ProviderSettings(
            "anthropic",
            "anthropic",
            _url("ANTHROPIC_BASE_URL", r.text("ANTHROPIC_BASE_URL", "https://api.anthropic.com")),
            r.text("ANTHROPIC_API_KEY"),
        ),
        ProviderSettings("mock", "mock", ""),
    ]
    # Extra OpenAI-compatible providers (vLLM, Ollama, Azure, AI Gateway...):
    # WATCHLLM_PROVIDERS=local=http://127.0.0.1:8000/v1,groq=https://...; key in
    # WATCHLLM_PROVIDER_<NAME>_API_KEY, kind anthropic with WATCHLLM_PROVIDER_<NAME>_KIND.
    for name, base_url in r.pairs("WATCHLLM_PROVIDERS"):
        upper = name.upper().replace("-", "_")
        kind = r.text(f"WATCHLLM_PROVIDER_{upper}_KIND", "openai")
        if kind not in ("openai", "anthropic"):
            raise SettingsError(f"WATCHLLM_PROVIDER_{upper}_KIND must be openai or anthropic")
        providers = [p for p in providers if p.name != name]
        providers.append(
            ProviderSettings(
                name,
                kind,  # type: ignore[arg-type]
                _url(f"WATCHLLM_PROVIDERS ({name})", base_url),
                r.text(f"WATCHLLM_PROVIDER_{upper}_API_KEY"),
            )
        )
    return tuple(providers)


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build Settings from `environ` (default os.environ) over an optional .env file."""
    env: dict[str, str] = read_dotenv(dotenv) if dotenv else {}
    env.update(os.environ if environ is None else environ)
    r = _Reader(env)

    mode = r.text("WATCHLLM_MODE", "embedded")
    if mode not in _MODES:
        raise SettingsError(f"WATCHLLM_MODE must be one of {', '.join(_MODES)}, got {mode!r}")
    providers = _providers(r)
    names = {p.name for p in providers}
    default_provider = r.text("WATCHLLM_DEFAULT_PROVIDER") or (
        "openai" if r.text("OPENAI_API_KEY") else "mock"
    )
    routes = tuple(r.pairs("WATCHLLM_ROUTES"))
    for _, provider in (*routes, ("", default_provider)):
        if provider not in names:
            raise SettingsError(f"unknown provider {provider!r}; known: {', '.join(sorted(names))}")
    fallbacks = tuple((m, tuple(a.split("|"))) for m, a in r.pairs("WATCHLLM_FALLBACKS"))
    log_level = r.text("WATCHLLM_LOG_LEVEL", "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(
            f"WATCHLLM_LOG_LEVEL must be debug/info/warning/error, got {log_level!r}"
        )
    port = r.integer("WATCHLLM_PORT", 8080, minimum=0)
    if port > 65535:
        raise SettingsError(f"WATCHLLM_PORT must be <= 65535, got {port}")
    interface = r.text("WATCHLLM_SERVER_INTERFACE", "rsgi").lower()
    if interface not in ("rsgi", "asgi"):
        raise SettingsError(f"WATCHLLM_SERVER_INTERFACE must be rsgi or asgi, got {interface!r}")

    return Settings(
        mode=mode,  # type: ignore[arg-type]
        data_dir=Path(r.text("WATCHLLM_DATA_DIR", ".watchllm")),
        host=r.text("WATCHLLM_HOST", "127.0.0.1"),
        port=port,
        workers=r.integer("WATCHLLM_WORKERS", 1, minimum=1),
        interface=interface,  # type: ignore[arg-type]
        sched_batch=r.flag("WATCHLLM_SCHED_BATCH", True),
        analytics_idle=r.flag("WATCHLLM_ANALYTICS_IDLE", True),
        database_url=r.text("WATCHLLM_DATABASE_URL"),
        redis_url=r.text("WATCHLLM_REDIS_URL"),
        clickhouse_url=r.text("WATCHLLM_CLICKHOUSE_URL"),
        admin_key=r.text("WATCHLLM_ADMIN_KEY"),
        require_auth=r.flag("WATCHLLM_REQUIRE_AUTH", True),
        max_body_bytes=r.integer("WATCHLLM_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024),
        key_cache_ttl_s=r.number("WATCHLLM_KEY_CACHE_TTL", 5.0),
        connect_timeout_s=r.number("WATCHLLM_CONNECT_TIMEOUT", 10.0, minimum=0.001),
        read_timeout_s=r.number("WATCHLLM_READ_TIMEOUT", 600.0, minimum=0.001),
        max_retries=r.integer("WATCHLLM_MAX_RETRIES", 2),
        retry_backoff_s=r.number("WATCHLLM_RETRY_BACKOFF", 0.5),
        upstream_pool_size=r.integer("WATCHLLM_UPSTREAM_POOL_SIZE", 256, minimum=1),
        default_provider=default_provider,
        routes=routes,
        fallbacks=fallbacks,
        providers=providers,
        mock_latency_ms=r.number("WATCHLLM_MOCK_LATENCY_MS", 0.0),
        events_buffer=r.integer("WATCHLLM_EVENTS_BUFFER", 100_000, minimum=1),
        log_level=log_level,
        auto_migrate=r.flag("WATCHLLM_AUTO_MIGRATE", False),
        **_pipeline_settings(r),
        **_cache_settings(r),
        **_limits_settings(r),
        **_ingest_settings(r),
        vector_url=_vector_url(r),
    )


def _pipeline_settings(r: _Reader) -> dict[str, Any]:
    fail_mode = r.text("WATCHLLM_REDIS_FAIL_MODE", "open").lower()
    if fail_mode not in ("open", "closed"):
        raise SettingsError(f"WATCHLLM_REDIS_FAIL_MODE must be open or closed, got {fail_mode!r}")
    spool = r.text("WATCHLLM_SPOOL_DIR")
    return {
        "spool_dir": Path(spool) if spool else None,
        "events_batch_size": r.integer("WATCHLLM_EVENTS_BATCH_SIZE", 20_000, minimum=1),
        "events_flush_ms": r.number("WATCHLLM_EVENTS_FLUSH_MS", 1000.0, minimum=1.0),
        "events_linger_ms": r.number("WATCHLLM_EVENTS_LINGER_MS", 5.0),
        "spool_max_bytes": r.integer("WATCHLLM_SPOOL_MAX_BYTES", 1 << 30, minimum=1 << 20),
        "pg_pool_size": r.integer("WATCHLLM_PG_POOL_SIZE", 10, minimum=1),
        "redis_fail_mode": fail_mode,
        "event_ttl_days": r.integer("WATCHLLM_EVENT_TTL_DAYS", 90),
    }


def _cache_settings(r: _Reader) -> dict[str, Any]:
    multi = r.text("WATCHLLM_CACHE_MULTI_CHOICE", "bypass")
    if multi not in ("bypass", "cache"):
        raise SettingsError(f"WATCHLLM_CACHE_MULTI_CHOICE must be bypass or cache, got {multi!r}")
    max_temp = r.text("WATCHLLM_CACHE_MAX_TEMPERATURE")
    threshold = r.number("WATCHLLM_SEMANTIC_THRESHOLD", 0.80)
    if threshold > 1:
        raise SettingsError(f"WATCHLLM_SEMANTIC_THRESHOLD must be <= 1, got {threshold}")
    return {
        "cache_enabled": r.flag("WATCHLLM_CACHE", True),
        "cache_ttl_s": r.number("WATCHLLM_CACHE_TTL", 86400.0),
        "cache_max_bytes": r.integer("WATCHLLM_CACHE_MAX_BYTES", 256 * 1024 * 1024, minimum=0),
        "cache_multi_choice": multi,
        "cache_max_temperature": r.number("WATCHLLM_CACHE_MAX_TEMPERATURE", 0.0)
        if max_temp else None,
        "cache_lock_wait_s": r.number("WATCHLLM_CACHE_LOCK_WAIT", 30.0),
        "semantic_cache": r.flag("WATCHLLM_SEMANTIC_CACHE", False),
        "semantic_threshold": threshold,
        "embedding_model": r.text("WATCHLLM_EMBEDDING_MODEL", "local/all-minilm-l6-v2"),
    }


def _prefetch_ms(r: _Reader) -> int:
    ms = r.integer("WATCHLLM_LIMITS_PREFETCH_MS", 100, minimum=0)
    if ms > 2000:  # a prefetch must be back well within the buckets' 5 s hold (ops.HOLD_MS)
        raise SettingsError(f"WATCHLLM_LIMITS_PREFETCH_MS must be at most 2000, got {ms}")
    return ms


def _limits_settings(r: _Reader) -> dict[str, Any]:
    fail_mode = r.text("WATCHLLM_LIMITS_FAIL_MODE", "open").lower()
    if fail_mode not in ("open", "closed"):
        raise SettingsError(f"WATCHLLM_LIMITS_FAIL_MODE must be open or closed, got {fail_mode!r}")
    previous = r.text("WATCHLLM_MASTER_KEY_PREVIOUS")
    return {
        "default_rpm": r.integer("WATCHLLM_DEFAULT_RPM", 0) or None,  # unset or 0: unlimited
        "default_tpm": r.integer("WATCHLLM_DEFAULT_TPM", 0) or None,
        "default_max_concurrent": r.integer("WATCHLLM_DEFAULT_MAX_CONCURRENT", 0) or None,
        "limits_fail_mode": fail_mode,
        "limits_timeout_s": r.number("WATCHLLM_LIMITS_TIMEOUT", 1.0, minimum=0.001),
        "limits_lease_s": r.number("WATCHLLM_LIMITS_LEASE", 900.0, minimum=1.0),
        "limits_prefetch_ms": _prefetch_ms(r),
        "prices_file": r.text("WATCHLLM_PRICES_FILE"),
        "master_key": r.text("WATCHLLM_MASTER_KEY"),
        "master_key_previous": tuple(k.strip() for k in previous.split(",") if k.strip()),
    }


def _ingest_settings(r: _Reader) -> dict[str, Any]:
    return {
        "ingest_max_events": r.integer("WATCHLLM_INGEST_MAX_EVENTS", 1000, minimum=1),
        "ingest_max_bytes": r.integer("WATCHLLM_INGEST_MAX_BYTES", 10 * 1024 * 1024,
                                      minimum=1024),
        "ingest_durable_timeout_s": r.number("WATCHLLM_INGEST_DURABLE_TIMEOUT", 10.0,
                                             minimum=0.001),
    }


def _vector_url(r: _Reader) -> str:
    url = r.text("WATCHLLM_VECTOR_URL")
    if url.lower() == "off":
        return "off"
    if url and not url.startswith(("postgres://", "postgresql://")):
        raise SettingsError(f"WATCHLLM_VECTOR_URL must be a postgresql:// URL or off, got {url!r}")
    return url
