"""The provider seam: one async `send` per provider, the same result shape for all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from watchllm.env.base import BodySink

# Client headers forwarded upstream (OpenAI's own request options); nothing else is.
FORWARDED_HEADERS = frozenset((b"openai-organization", b"openai-project", b"openai-beta",
                               b"anthropic-beta", b"anthropic-version", b"idempotency-key"))


@dataclass(slots=True)
class UpstreamCall:
    endpoint: str  # "chat/completions", "completions", "embeddings", "responses"
    body: bytes  # forwarded untouched unless the model name had to change
    data: dict[str, Any]
    model: str  # as the provider should see it
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    # The project's own provider keys (provider name -> key); they win over the global ones.
    provider_keys: dict[str, str] = field(default_factory=dict)

    def with_model(self, model: str) -> UpstreamCall:
        """The same call for another model (a fallback, or a `provider/` prefix stripped)."""
        if model == self.data.get("model"):
            return self
        data = {**self.data, "model": model}
        return UpstreamCall(self.endpoint, orjson.dumps(data), data, model, self.stream,
                            self.headers, self.provider_keys)


@dataclass(slots=True)
class UpstreamResult:
    """A provider's answer in OpenAI wire format.

    Exactly one of `body` (complete) or `chunks` (SSE bytes as they arrive) is set.
    """

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    close: Callable[[], None] = lambda: None
    # After a chunk: whether it was the last (its write can end the response too).
    ended: Callable[[], bool] = lambda: False
    # The client's push mode, when it has one (`env.http_lean`): `pipe(sink, kept,
    # on_first)` hands each read's chunks to `sink(chunk, more)` in the read's callback,
    # appending each to `kept` first; `on_first()` runs before the first; awaited to the end.
    pipe: Callable[[BodySink, list[bytes], Callable[[], None]], Awaitable[None]] | None = None

    async def read(self) -> bytes:
        if self.body is not None:
            return self.body
        assert self.chunks is not None
        self.body = b"".join([c async for c in self.chunks])
        self.chunks = None
        return self.body


class Provider(Protocol):
    name: str
    kind: str

    async def send(self, call: UpstreamCall, connect_timeout: float,
                   read_timeout: float) -> UpstreamResult: ...

    def supports(self, endpoint: str) -> bool: ...
