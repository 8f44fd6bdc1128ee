"""The one ASGI application. Entry points build an Env and hand it here. One liberty:
the proxy's responses carry text headers (`http.asgi.TextHeaders`), which the RSGI entry
hands to granian as they are; `entrypoints.asgi:app` and the Cloudflare bridge encode
them for servers that take bytes (docs/design.md).

    app = Gateway(settings, env_factory)   # env_factory: async () -> Env, run at lifespan start

Routing is a dict lookup on (method, path) plus a short list of prefix routes; there is no
middleware stack, because every microsecond here is paid on every proxied request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import secrets
from collections.abc import Awaitable, Callable

from watchllm import core, metrics, pricing
from watchllm.auth import Authenticator
from watchllm.cache.embedder import make_embedder
from watchllm.cache.service import ResponseCache
from watchllm.env.base import Env
from watchllm.errors import INTERNAL_ERROR_BODY, NotFoundError, WatchLLMError
from watchllm.http.asgi import ClientDisconnected, Receive, Request, Scope, Send, send_body
from watchllm.limits.service import LimitsService
from watchllm.metadata.cached import ProjectSettingsCache, ProviderKeyCache
from watchllm.metadata.plans import PlanStore
from watchllm.metadata.store import MetadataStore
from watchllm.proxy.context import ProxyContext
from watchllm.proxy.hot import HotRequests
from watchllm.proxy.router import ProviderRouter
from watchllm.routes import admin, admin_plans, analytics, cache_admin, health, ingest, openapi
from watchllm.routes import proxy as proxy_routes
from watchllm.settings import Settings

log = logging.getLogger("watchllm")
# Request ids need to be unique, not secret: a PRNG seeded from the OS per process avoids
# a getrandom() syscall on every request.
_ids = random.Random(secrets.randbits(64) ^ os.getpid())


def new_request_id() -> str:
    return f"req_{_ids.getrandbits(96):024x}"

Handler = Callable[["Gateway", Request, Send], Awaitable[None]]
EnvFactory = Callable[[Settings], Awaitable[Env]]


def _settle_gc() -> None:
    """Keep the cyclic garbage collector off the request path. Start-up leaves ~45k
    long-lived container objects that each older-generation collection walked again:
    freeze them. Requests free nearly everything by reference counting, so a larger first
    generation costs little memory. Measured in process over 10k passthrough requests
    (docs/performance.md): default thresholds 51 collections, 231 ms (23 µs/request);
    frozen with 20,000, 1 collection, 6 ms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


class Gateway:
    def __init__(self, settings: Settings, env_factory: EnvFactory) -> None:
        self.settings = settings
        self._env_factory = env_factory
        self._env: Env | None = None
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): health.health,
            ("GET", "/ready"): health.ready,
            ("GET", "/v1/models"): proxy_routes.list_models,
            ("GET", "/metrics"): metrics.metrics_endpoint,
            **admin.ROUTES,
            **admin_plans.ROUTES,
            **ingest.ROUTES,
            **analytics.ROUTES,
            **openapi.ROUTES,
            **cache_admin.ROUTES,
        }
        self.prefix_routes: list[tuple[str, str, Handler]] = [
            *admin.PREFIX_ROUTES, *admin_plans.PREFIX_ROUTES, *ingest.PREFIX_ROUTES,
            *analytics.PREFIX_ROUTES]

    # -- lifecycle ----------------------------------------------------------------
    @property
    def env(self) -> Env:
        if self._env is None:
            raise RuntimeError("the gateway has not started (ASGI lifespan not run)")
        return self._env

    async def startup(self) -> None:
        if self._env is not None:
            return
        self._env = await self._env_factory(self.settings)
        if core.BACKEND == "rust":
            # The BPE tables load lazily (~0.8 s): pay it here, not on the first request.
            await asyncio.to_thread(_warm_tokenizers)
        self.store = MetadataStore(self._env.db)
        self.auth = Authenticator(self.store, self.settings)
        self.router = ProviderRouter(self.settings, self._env.http)
        self.projects = ProjectSettingsCache(self.store, self.settings.key_cache_ttl_s)
        vectors = self._env.vectors
        embedder = make_embedder(self.settings.embedding_model, self.router) if vectors else None
        self.cache = ResponseCache(self.settings, self._env.kv, vectors, embedder)
        self.prices = pricing.configure(self.settings.prices_file)
        self.plans = PlanStore(self._env.db, self.settings)
        if self.settings.master_key:
            _ = self.plans.ring  # an unusable master key stops start-up, not a request later
        self.limits = LimitsService(self._env.counters, self.settings, self.plans)
        self.provider_keys = ProviderKeyCache(self.plans, self.settings.key_cache_ttl_s)
        self.hot = HotRequests()
        _settle_gc()
        log.info("watchllm started: mode=%s core=%s", self._env.mode, core.BACKEND)

    async def shutdown(self, drain_timeout_s: float = 30.0) -> None:
        """Let in-flight requests finish, then flush events and close backends."""
        if self._env is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        except TimeoutError:
            log.warning("shutdown: %d requests still in flight after %ss", self.inflight,
                        drain_timeout_s)
        await self.limits.close()  # deferred settles reach the counters before they close
        await self._env.events.flush()
        await self._env.close()
        self._env = None

    async def __aenter__(self) -> Gateway:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- ASGI -----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._env is None:  # servers without lifespan support
            await self.startup()
        self.begin()
        try:
            await self.dispatch(Request(scope, receive), send)
        finally:
            self.end()

    async def dispatch(self, req: Request, send: Send) -> None:
        """Answer one HTTP request (between `begin` and `end`). The RSGI entry calls this
        with a Request it made straight from granian's scope for a proxied POST."""
        request_id = req.header(b"x-request-id") or new_request_id()
        try:
            endpoint = proxy_routes.ENDPOINTS.get(req.path) if req.method == "POST" else None
            if endpoint is not None:
                await proxy_routes.handle(self, req, send, ProxyContext(request_id, endpoint))
                return
            handler = self.routes.get((req.method, req.path)) or self._prefix(req)
            try:
                if handler is None:
                    raise NotFoundError(f"Unknown endpoint: {req.method} {req.path}")
                await handler(self, req, send)
            except WatchLLMError as exc:
                headers = [(b"content-type", b"application/json"),
                           (b"x-request-id", request_id.encode())]
                headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
                await send_body(send, exc.status, exc.body(), headers)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", req.method, req.path,
                          request_id)
            # If the response had already started there is nothing more to say.
            with contextlib.suppress(Exception):
                await send_body(send, 500, INTERNAL_ERROR_BODY,
                                [(b"content-type", b"application/json"),
                                 (b"x-request-id", request_id.encode())])

    def begin(self) -> None:
        """A request starts (shutdown waits for every begun request to end)."""
        self.inflight += 1
        if self.inflight == 1:  # else it is clear already: set only when none are left
            self._idle.clear()

    def end(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            self._idle.set()

    @property
    def started(self) -> bool:
        return self._env is not None

    def _prefix(self, req: Request) -> Handler | None:
        for method, prefix, handler in self.prefix_routes:
            if req.method == method and req.path.startswith(prefix):
                return handler
        return None


def _warm_tokenizers() -> None:
    for encoding in ("o200k_base", "cl100k_base"):
        core.count_tokens("warm", encoding)

