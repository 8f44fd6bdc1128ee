"""Model -> provider routing, retries with backoff, and fallbacks to alternative models.

Routing, first match wins: an explicit `provider/model` prefix naming a configured provider;
`WATCHLLM_ROUTES` globs (`claude-*=anthropic,llama*=local`); `mock*` -> mock; `claude*` ->
anthropic; else the default provider. Retries cover connection errors, 429 and 5xx, waiting
`Retry-After` when the provider says so (up to MAX_RETRY_WAIT_S; longer waits are handed to
the client with the 429 instead). After the retries, each fallback model is tried in turn.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import random
import time
from collections.abc import Container
from dataclasses import dataclass

from watchllm.env.base import ConnectError, HttpClient
from watchllm.errors import (
    InvalidRequestError,
    UnknownModelError,
    UpstreamError,
    UpstreamTimeoutError,
)
from watchllm.proxy.anthropic import AnthropicProvider
from watchllm.proxy.base import Provider, UpstreamCall, UpstreamResult
from watchllm.proxy.mock import MockProvider
from watchllm.proxy.openai_compat import OpenAICompatible
from watchllm.settings import ProviderSettings, Settings

MAX_RETRY_WAIT_S = 20.0
_OFFICIAL = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
_ENV_KEY = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str  # the name the provider sees


def retry_after_s(headers: dict[str, str]) -> float | None:
    """Seconds the upstream asked us to wait (`retry-after-ms`, `retry-after` secs or date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _build(p: ProviderSettings, http: HttpClient, settings: Settings) -> Provider:
    if p.kind == "anthropic":
        return AnthropicProvider(p, http)
    if p.kind == "mock":
        return MockProvider(settings.mock_latency_ms)
    return OpenAICompatible(p, http)


class ProviderRouter:
    def __init__(self, settings: Settings, http: HttpClient) -> None:
        self.settings = settings
        self.providers: dict[str, Provider] = {
            p.name: _build(p, http, settings) for p in settings.providers
        }
        self._unusable = {
            p.name: f"it has no API key configured ({_ENV_KEY[p.kind]})"
            for p in settings.providers
            if p.kind in _OFFICIAL and p.base_url.startswith(_OFFICIAL[p.kind]) and not p.api_key
        }
        self.fallbacks = dict(settings.fallbacks)
        self._cache: dict[str, Route] = {}

    def usable(self, provider: str) -> bool:
        """Whether `provider` can be called without a project's own key."""
        return provider not in self._unusable

    def resolve(self, model: str, own_keys: Container[str] = ()) -> Route:
        """The provider for `model`; `own_keys`: providers the project has its own key for."""
        if own_keys:
            return self._resolve(model, own_keys)
        route = self._cache.get(model)
        if route is None:
            route = self._resolve(model)
            if len(self._cache) < 10_000:
                self._cache[model] = route
        return route

    def _resolve(self, model: str, own_keys: Container[str] = ()) -> Route:
        name, upstream_model = self.settings.default_provider, model
        prefix, sep, rest = model.partition("/")
        if sep and prefix in self.providers:
            name, upstream_model = prefix, rest
        elif glob := next((p for g, p in self.settings.routes if fnmatch.fnmatchcase(model, g)),
                          None):
            name = glob
        elif model.startswith("mock"):
            name = "mock"
        elif model.startswith("claude") and ("anthropic" not in self._unusable
                                             or "anthropic" in own_keys):
            name = "anthropic"
        if name in self._unusable and name not in own_keys:
            raise UnknownModelError(
                f"The model {model!r} routes to provider {name!r}, but {self._unusable[name]}.",
                param="model")
        return Route(self.providers[name], upstream_model)

    async def send(self, call: UpstreamCall) -> tuple[UpstreamResult, Route]:
        """The first good answer from the model or its fallbacks; the last failure otherwise.

        A non-retryable answer (e.g. a 400) is returned as is. Raises UpstreamError /
        UpstreamTimeoutError when no provider answered at all.
        """
        fallbacks = self.fallbacks.get(call.model)
        models = (call.model, *fallbacks) if fallbacks else (call.model,)
        failure: UpstreamResult | Exception | None = None
        for model in models:
            route = self.resolve(model, call.provider_keys)
            if not route.provider.supports(call.endpoint):
                raise InvalidRequestError(
                    f"Provider {route.provider.name!r} (model {model!r}) does not support "
                    f"/v1/{call.endpoint}.", param="model")
            outcome = await self._attempts(call.with_model(route.model), route)
            if isinstance(outcome, UpstreamResult) and outcome.status < 500 \
                    and outcome.status != 429:
                return outcome, route
            failure = outcome
        if isinstance(failure, UpstreamResult):
            return failure, route
        assert isinstance(failure, Exception)
        raise failure

    async def _attempts(self, call: UpstreamCall, route: Route) -> UpstreamResult | Exception:
        s = self.settings
        outcome: UpstreamResult | Exception | None = None
        for attempt in range(s.max_retries + 1):
            last = attempt == s.max_retries
            try:
                result = await route.provider.send(call, s.connect_timeout_s, s.read_timeout_s)
            except ConnectError as exc:
                outcome = UpstreamError(f"Provider {route.provider.name!r} is unreachable: {exc}")
                wait = None
            except TimeoutError as exc:
                # Not retried: the provider may still be generating (and billing) the answer.
                return UpstreamTimeoutError(f"Provider {route.provider.name!r} timed out: {exc}")
            else:
                if result.status != 429 and result.status < 500:
                    return result
                outcome = result
                wait = retry_after_s(result.headers)
                if wait is not None and wait > MAX_RETRY_WAIT_S:
                    return result  # the client should wait; it gets the Retry-After
            if last:
                break
            backoff = s.retry_backoff_s * (2 ** attempt) * (0.5 + random.random() / 2)
            await asyncio.sleep(max(backoff, wait or 0.0))
        return outcome if outcome is not None else UpstreamError("no attempt was made")
