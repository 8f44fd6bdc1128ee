"""Anthropic as a chat-completions provider (Messages API under the hood)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from watchllm.env.base import HttpClient, HttpResponse
from watchllm.errors import error_body
from watchllm.proxy.anthropic_translate import (
    StreamTranslator,
    error_message,
    to_chat_completion,
    to_messages_request,
)
from watchllm.proxy.base import UpstreamCall, UpstreamResult
from watchllm.settings import ProviderSettings

API_VERSION = "2023-06-01"
_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream"}


class AnthropicProvider:
    kind = "anthropic"

    def __init__(self, settings: ProviderSettings, http: HttpClient) -> None:
        self.name = settings.name
        self.url = f"{settings.base_url}/v1/messages"
        self.http = http
        self._headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if settings.api_key:
            self._headers["x-api-key"] = settings.api_key

    def supports(self, endpoint: str) -> bool:
        return endpoint == "chat/completions"

    async def send(self, call: UpstreamCall, connect_timeout: float,
                   read_timeout: float) -> UpstreamResult:
        request = to_messages_request(call.data, call.model, call.stream)
        headers = {**self._headers, **{k: v for k, v in call.headers.items()
                                       if k.startswith("anthropic-")}}
        own = call.provider_keys.get(self.name)
        if own:
            headers["x-api-key"] = own
        resp = await self.http.request("POST", self.url, headers, orjson.dumps(request),
                                       connect_timeout=connect_timeout, read_timeout=read_timeout)
        if resp.status != 200:
            body = await resp.read()
            # Re-shape Anthropic's error as OpenAI's, keeping status and message.
            headers = {k: v for k, v in resp.headers.items() if k == "retry-after"}
            return UpstreamResult(resp.status, {**_JSON, **headers},
                                  body=error_body(error_message(body), "upstream_error"))
        if call.stream:
            options = call.data.get("stream_options")
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            translator = StreamTranslator(str(call.data.get("model")), usage)
            return UpstreamResult(200, dict(_SSE), chunks=_translate(resp, translator),
                                  close=resp.close)
        message = orjson.loads(await resp.read())
        return UpstreamResult(200, dict(_JSON),
                              body=orjson.dumps(to_chat_completion(message,
                                                                   str(call.data.get("model")))))


async def _translate(resp: HttpResponse, translator: StreamTranslator) -> AsyncIterator[bytes]:
    async for raw in resp.iter_chunks():
        out = translator.feed(raw)
        if out:
            yield out
