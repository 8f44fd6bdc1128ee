"""HttpClient on the Workers `fetch` (outbound requests to providers and ClickHouse).

The runtime pools connections itself; this adapter adds the seam's timeouts (an
AbortController aborts the request when headers or the next body chunk take too long,
and on `close()`) and streams response bodies chunk by chunk from the body's reader, so
SSE tokens are forwarded as they arrive. `fetch` does not say whether a failure happened
before or after the request was sent; a rejection before the response head is reported
as `ConnectError` (the seam's "retryable") with the runtime's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from watchllm.env.base import ConnectError
from watchllm.env.cloudflare._js import (
    IN_PYODIDE,
    JsException,
    as_bytes,
    error_text,
    is_null,
    js,
    js_value,
)

# Set by the runtime from the body and URL; forwarding them would be refused or wrong.
_DROP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class FetchResponse:
    def __init__(self, response: Any, abort: Any, read_timeout: float) -> None:
        self._response = response
        self._abort = abort
        self._read_timeout = read_timeout
        self.status: int = int(response.status)
        self.headers: dict[str, str] = {
            str(pair[0]).lower(): str(pair[1]) for pair in response.headers.entries()}
        self._done = False

    async def read(self) -> bytes:
        chunks = [c async for c in self.iter_chunks()]
        return b"".join(chunks)

    def ended(self) -> bool:
        return False  # a ReadableStream tells only on the next read

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        body = self._response.body
        if is_null(body):
            self._done = True
            return
        reader = body.getReader()
        try:
            while True:
                try:
                    part = await asyncio.wait_for(_awaitable(reader.read()),
                                                  self._read_timeout)
                except TimeoutError:
                    self.close()
                    raise
                except JsException as exc:
                    raise ConnectionError(f"upstream body: {error_text(exc)}") from None
                if part.done:
                    break
                data = as_bytes(part.value)
                if data:
                    yield data
            self._done = True
        finally:
            if not self._done:
                self.close()
            reader.releaseLock()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._abort()


async def _awaitable(value: Any) -> Any:
    return await value


class FetchHttpClient:
    """`fetcher` is the JS fetch to use (the global `fetch` by default). Pyodide only."""

    def __init__(self, fetcher: Any = None) -> None:
        if fetcher is None and not IN_PYODIDE:
            raise RuntimeError("FetchHttpClient runs under Pyodide (the Workers runtime)")
        self._fetch = fetcher if fetcher is not None else js.fetch

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> FetchResponse:
        controller = js.AbortController.new()
        init: dict[str, Any] = {
            "method": method,
            "headers": {k: v for k, v in headers.items() if k.lower() not in _DROP},
        }
        if body is not None and method not in ("GET", "HEAD"):
            init["body"] = body
        js_init: Any = js_value(init)
        js_init.signal = controller.signal
        try:
            response = await asyncio.wait_for(_awaitable(self._fetch(url, js_init)),
                                              connect_timeout)
        except TimeoutError:
            controller.abort()
            raise TimeoutError(f"no response from {url} within {connect_timeout}s") from None
        except JsException as exc:
            raise ConnectError(f"fetch {url}: {error_text(exc)}") from None
        return FetchResponse(response, controller.abort, read_timeout)

    async def close(self) -> None:
        return None
