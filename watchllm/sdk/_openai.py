"""Instrument an `openai` client: calls made straight to a provider become prompt_call
events (or `error` events when the call raises; the exception still reaches the caller).

Only this client instance is patched (`client.chat.completions.create`); streams are
wrapped so the event is logged when the stream ends, with the time to first token. The
openai package is not imported here: any object with that shape works.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from watchllm.sdk._client import WatchLLM

_MARK = "__watchllm_instrumented__"


def instrument(openai_client: Any, wl: WatchLLM) -> Any:
    completions = openai_client.chat.completions
    original = completions.create
    if getattr(original, _MARK, False):
        return openai_client
    provider = _provider(openai_client)

    # One wrapper for both clients: the async client's `create` is a plain function that
    # returns a coroutine (openai decorates it), so the result's type decides.
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        call = _Call(wl, provider, kwargs)
        try:
            result = original(*args, **kwargs)
        except Exception as e:
            call.failed(e)
            raise
        if inspect.isawaitable(result):
            return _finish(result, call, bool(kwargs.get("stream")))
        return _Stream(result, call) if kwargs.get("stream") else call.done(result)

    setattr(create, _MARK, True)
    completions.create = create
    return openai_client


async def _finish(pending: Awaitable[Any], call: _Call, stream: bool) -> Any:
    try:
        result = await pending
    except Exception as e:
        call.failed(e)
        raise
    return _Stream(result, call) if stream else call.done(result)


def _provider(client: Any) -> str:
    host = urlsplit(str(getattr(client, "base_url", "") or "")).hostname or ""
    return "openai" if host.endswith("openai.com") or not host else host[:64]


class _Call:
    def __init__(self, wl: WatchLLM, provider: str, kwargs: dict[str, Any]) -> None:
        self.wl, self.provider, self.kwargs = wl, provider, kwargs
        self.started = time.perf_counter()
        self.ttft: float | None = None
        self.text: list[str] = []
        self.usage: Any = None
        self.model = str(kwargs.get("model", ""))
        self.request_id = ""

    def _ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def _common(self) -> dict[str, Any]:
        try:
            prompt = json.dumps(self.kwargs.get("messages", []), ensure_ascii=False,
                                default=str)
        except (TypeError, ValueError):
            prompt = repr(self.kwargs.get("messages"))
        user = self.kwargs.get("user")
        return {"model": self.model or "unknown", "provider": self.provider,
                "endpoint": "chat/completions", "prompt": prompt,
                "user_id": user if isinstance(user, str) else None,
                "request_id": self.request_id or None}

    def done(self, result: Any) -> Any:
        try:
            self.model = str(getattr(result, "model", "") or self.model)
            self.request_id = str(getattr(result, "_request_id", "") or "")
            choices = getattr(result, "choices", None) or []
            message = getattr(choices[0], "message", None) if choices else None
            content = getattr(message, "content", None)
            if content is None and message is not None and getattr(message, "tool_calls", None):
                content = json.dumps([tc.model_dump() for tc in message.tool_calls], default=str)
            self.text = [content or ""]
            self.usage = getattr(result, "usage", None)
            self._log()
        except Exception as e:  # never let logging break the caller's call
            self.wl._report("internal", e)
        return result

    def _chunk(self, chunk: Any) -> None:
        try:
            if self.ttft is None:
                self.ttft = self._ms()
            self.model = str(getattr(chunk, "model", "") or self.model)
            self.request_id = self.request_id or str(getattr(chunk, "id", "") or "")
            if getattr(chunk, "usage", None) is not None:
                self.usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or []:
                piece = getattr(getattr(choice, "delta", None), "content", None)
                if piece:
                    self.text.append(piece)
        except Exception as e:
            self.wl._report("internal", e)

    def stream(self, stream: Any) -> Iterator[Any]:
        try:
            for chunk in stream:
                self._chunk(chunk)
                yield chunk
        except Exception as e:
            self.failed(e)
            raise
        self._log()

    async def astream(self, stream: Any) -> AsyncIterator[Any]:
        try:
            async for chunk in stream:
                self._chunk(chunk)
                yield chunk
        except Exception as e:
            self.failed(e)
            raise
        self._log()

    def _log(self) -> None:
        u = self.usage
        cached = getattr(getattr(u, "prompt_tokens_details", None), "cached_tokens", None)
        latency = self._ms()
        self.wl.log_prompt_call(
            response="".join(self.text), tokens_input=getattr(u, "prompt_tokens", None),
            tokens_output=getattr(u, "completion_tokens", None),
            tokens_cached=cached if isinstance(cached, int) else None, latency_ms=latency,
            time_to_first_token_ms=None if self.ttft is None else min(self.ttft, latency),
            http_status=200, **self._common())

    def failed(self, exc: Exception) -> None:
        status = getattr(exc, "status_code", 0)
        self.wl.log_event(
            "error", error_type=type(exc).__name__,
            error_message=(str(exc) or repr(exc))[:10_000],
            status="error", http_status=status if isinstance(status, int) else 0,
            latency_ms=self._ms(), **self._common())


class _Stream:
    """The provider's stream, observed: iterating it feeds the event; everything else
    (`close()`, `response`, `with`) goes to the original object."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner, self._call = inner, call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __iter__(self) -> Iterator[Any]:
        return self._call.stream(self._inner)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._call.astream(self._inner)

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close()
