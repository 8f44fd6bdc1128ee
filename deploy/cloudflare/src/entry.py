"""The Worker entry: the same Gateway as every other runtime, served from `fetch`.

`Default.fetch` serves the ASGI app (watchllm/env/cloudflare/asgi_bridge.py); `queue`
consumes event batches into ClickHouse; `LimiterObject` is the Durable Object that holds
rate-limit state. One Gateway per isolate, built on the first request from the Worker's
vars and bindings; nothing here is business logic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from workers import DurableObject, Response, WorkerEntrypoint

from watchllm.app import Gateway
from watchllm.env.base import Env
from watchllm.env.cloudflare import binding, build_env, settings_from_env
from watchllm.env.cloudflare._js import is_null, to_py, unwrap
from watchllm.env.cloudflare.asgi_bridge import serve_asgi
from watchllm.env.cloudflare.consumer import consume
from watchllm.env.cloudflare.limiter import LimiterState
from watchllm.settings import Settings

log = logging.getLogger("watchllm.cloudflare")
_gateway: Gateway | None = None


def gateway(js_env: Any, ctx: Any) -> Gateway:
    global _gateway
    if _gateway is None:
        settings = settings_from_env(js_env)
        logging.basicConfig(level=settings.log_level.upper())

        async def make_env(s: Settings) -> Env:
            return await build_env(js_env, ctx, s)

        _gateway = Gateway(settings, make_env)
    return _gateway


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        gw = gateway(self.env, self.ctx)
        return await serve_asgi(gw, getattr(request, "js_object", request), self.ctx)

    async def queue(self, batch: Any) -> None:
        gw = gateway(self.env, self.ctx)
        await gw.startup()
        sink = gw.env.analytics
        if sink is None:
            log.error("WATCHLLM_CLICKHOUSE_URL is not set: event batches are retried until "
                      "Queues dead-letters them")
            unwrap(batch).retryAll()
            return
        report = await consume(batch, sink, dead_letter=binding(self.env, "EVENTS_DLQ"))
        log.info("queue batch: %d inserted, %d retried, %d dead-lettered",
                 report.inserted, report.retried, report.dead_lettered)


class LimiterObject(DurableObject):
    """Rate-limit state of one project (watchllm/env/cloudflare/limiter.py)."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.state: LimiterState | None = None

    async def fetch(self, request: Any) -> Any:
        storage = unwrap(self.ctx.storage)
        if self.state is None:
            self.state = LimiterState()
            saved = await storage.get("state")
            self.state.load(None if is_null(saved) else str(to_py(saved)))
        req = getattr(request, "js_object", request)
        try:
            result = await self.state.handle(json.loads(str(await req.text())))
        except (ValueError, KeyError, TypeError) as exc:
            return Response(str(exc), status=400)
        await storage.put("state", self.state.dump())
        return Response(json.dumps(result), headers={"content-type": "application/json"})
