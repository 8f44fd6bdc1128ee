"""Any OpenAI-compatible upstream: OpenAI, Azure OpenAI, vLLM, Ollama, AI Gateway URLs."""

from __future__ import annotations

from watchllm.env.base import HttpClient
from watchllm.proxy.base import UpstreamCall, UpstreamResult
from watchllm.settings import ProviderSettings

_JSON = {"content-type": "application/json", "accept": "application/json"}
_STREAM = {"content-type": "application/json", "accept": "text/event-stream"}


class OpenAICompatible:
    kind = "openai"

    def __init__(self, settings: ProviderSettings, http: HttpClient) -> None:
        self.name = settings.name
        self.base_url = settings.base_url
        self.http = http
        self._auth = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        # The headers of a call with no headers of its own and no project key: made once.
        self._plain = {False: {**_JSON, **self._auth}, True: {**_STREAM, **self._auth}}

    def supports(self, endpoint: str) -> bool:
        return True

    async def send(self, call: UpstreamCall, connect_timeout: float,
                   read_timeout: float) -> UpstreamResult:
        own = call.provider_keys.get(self.name) if call.provider_keys else None
        if not own and not call.headers:
            headers = self._plain[call.stream]
        else:
            auth = {"authorization": f"Bearer {own}"} if own else self._auth
            headers = {**(_STREAM if call.stream else _JSON), **call.headers, **auth}
        resp = await self.http.request(
            "POST", f"{self.base_url}/{call.endpoint}", headers, call.body,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        )
        is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        if call.stream and resp.status == 200 and is_sse:
            return UpstreamResult(resp.status, dict(resp.headers), chunks=resp.iter_chunks(),
                                  close=resp.close, ended=resp.ended,
                                  pipe=getattr(resp, "pipe", None))
        return UpstreamResult(resp.status, dict(resp.headers), body=await resp.read())

    async def get(self, path: str, connect_timeout: float, read_timeout: float) -> UpstreamResult:
        resp = await self.http.request(
            "GET", f"{self.base_url}/{path}", {**_JSON, **self._auth}, None,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        )
        return UpstreamResult(resp.status, dict(resp.headers), body=await resp.read())
