"""`watchllm.entrypoints.asgi:app` — what granian (or any ASGI server) serves.

Settings are read once per worker process at import; an invalid one stops the worker
with a message naming it.
"""

from __future__ import annotations

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.http.asgi import Message, Receive, Scope, Send, raw_headers
from watchllm.settings import load_settings


class ASGIGateway:
    """The Gateway for ASGI servers: its responses' text headers (`http.asgi.TextHeaders`,
    what granian's RSGI takes as they are) become the bytes ASGI asks for."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.gateway(scope, receive, send)
            return

        async def send_bytes_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = raw_headers(message.get("headers", ()))
            await send(message)

        await self.gateway(scope, receive, send_bytes_headers)


app = ASGIGateway(Gateway(load_settings(), build_env))
