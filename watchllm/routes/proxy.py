"""The OpenAI-compatible endpoints: authenticate, validate, route, forward, record.

Response bodies reach the client as the provider sent them; WatchLLM adds only the
`x-request-id` and `x-watchllm-*` headers (and keeps the provider's rate-limit headers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson

from watchllm import core, metrics
from watchllm.cache import controls as cache_controls
from watchllm.cache.entry import CacheEntry, age_s, as_json, entry_from_stream, sse_body
from watchllm.cache.service import CacheHit
from watchllm.errors import InvalidRequestError, UpstreamError, WatchLLMError
from watchllm.events import usage as usage_mod
from watchllm.http.asgi import (
    JSON_TEXT_HEADERS,
    SSE_TEXT_HEADERS,
    Request,
    Send,
    TextHeaders,
    parse_object,
    send_body,
)
from watchllm.limits.service import MAX_SETTLED_TOKENS
from watchllm.proxy.anthropic_translate import error_message
from watchllm.proxy.base import FORWARDED_HEADERS, UpstreamCall, UpstreamResult
from watchllm.proxy.context import ProxyContext
from watchllm.proxy.hot import HotRequest
from watchllm.proxy.streaming import forward_stream

if TYPE_CHECKING:
    from watchllm.app import Gateway
    from watchllm.auth import Principal
    from watchllm.limits.plan import Limits

log = logging.getLogger("watchllm.proxy")
_HITS = ("HIT", "SEMANTIC_HIT")
_MODE = b"x-watchllm-cache-mode"
_MODE_ONLY = {_MODE}
_CONTROL_HEADERS = frozenset(cache_controls.HEADER_NAMES)
ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
# The field each endpoint cannot do without, and the JSON types it may have.
_REQUIRED: dict[str, tuple[str, tuple[type, ...]]] = {
    "chat/completions": ("messages", (list,)),
    "completions": ("prompt", (str, list)),
    "embeddings": ("input", (str, list)),
    "responses": ("input", (str, list)),
}
_PROVIDER_RATE_HEADERS = frozenset((
    "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"))
_KEPT_UPSTREAM = frozenset(("retry-after", "retry-after-ms", "openai-processing-ms",
                            "openai-version", "openai-organization", *_PROVIDER_RATE_HEADERS))
# A caller under WatchLLM's limits gets WatchLLM's x-ratelimit-* in place of the provider's
# (both would be the same header names twice: clients read "5, 9999").
_KEPT_UPSTREAM_LIMITED = _KEPT_UPSTREAM - _PROVIDER_RATE_HEADERS


def validate(endpoint: str, data: dict[str, Any]) -> tuple[str, bool]:
    """The model and stream flag; 400 naming the field otherwise."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("'model' is required and must be a non-empty string.",
                                  param="model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean.", param="stream")
    field, types = _REQUIRED[endpoint]
    value = data.get(field)
    if not isinstance(value, types) or not value:  # (each of `types` is list or str)
        kinds = " or ".join("an array" if t is list else "a string" for t in types)
        raise InvalidRequestError(f"'{field}' is required and must be {kinds} (non-empty).",
                                  param=field)
    if endpoint == "chat/completions":
        assert isinstance(value, list)
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise InvalidRequestError(f"messages[{i}] must be an object with a 'role'.",
                                          param=f"messages[{i}]")
    if stream and endpoint == "embeddings":
        raise InvalidRequestError("Embeddings cannot be streamed.", param="stream")
    return model, stream


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def response_headers(ctx: ProxyContext, upstream: dict[str, str]) -> TextHeaders:
    headers: TextHeaders = [
        ("x-request-id", ctx.request_id),
        ("x-watchllm-latency-ms", f"{ctx.elapsed_ms():.2f}"),
        ("x-watchllm-provider", ctx.provider),
    ]
    if ctx.upstream_s is not None:  # latency minus this is the gateway's own share
        headers.append(("x-watchllm-upstream-ms", f"{ctx.upstream_s * 1000:.2f}"))
    if ctx.cache_status != "NONE":
        headers.append(("x-watchllm-cache", ctx.cache_status))
    kept = _KEPT_UPSTREAM
    if ctx.limit_headers:
        headers += ctx.limit_headers
        kept = _KEPT_UPSTREAM_LIMITED
    # The provider's headers we keep: one C-level intersection (a provider sends ~20).
    for name in upstream.keys() & kept:
        value = upstream[name]
        headers.append((name, value if value.isascii() else _as_sent(value)))
    if (rid := upstream.get("x-request-id")) is not None:
        headers.append(("x-upstream-request-id", rid if rid.isascii() else _as_sent(rid)))
    return headers


def _as_sent(value: str) -> str:
    """An upstream header value with non-ASCII bytes (HTTP clients here read each value's
    bytes as latin-1 text) as the text granian writes out as those bytes: UTF-8 text when
    they are UTF-8; else left as read (it then leaves as that text's UTF-8, as before)."""
    try:
        return value.encode("latin-1").decode()
    except UnicodeError:  # not UTF-8 (or not latin-1 text): never fail the response for it
        return value.encode("utf-8", "replace").decode()


def _upstream_failure(ctx: ProxyContext, result: UpstreamResult) -> UpstreamError:
    """A provider 5xx (after retries and fallbacks) as our 502, its status and message kept."""
    body = result.body or b""
    return UpstreamError(
        f"Provider {ctx.provider!r} returned HTTP {result.status}: {error_message(body)}",
        upstream_status=result.status)


async def handle(gw: Gateway, req: Request, send: Send, ctx: ProxyContext) -> None:
    try:
        await _proxy(gw, req, send, ctx)
    except WatchLLMError as exc:
        ctx.status = exc.status
        ctx.error_type = exc.type
        ctx.error_message = exc.message
        headers = response_headers(ctx, {})
        headers.append(("content-type", "application/json"))
        headers += exc.headers.items()
        await send_body(send, exc.status, exc.body(), headers)
    finally:
        settling = finish(gw, ctx)
        if settling is not None:
            await settling


def finish(gw: Gateway, ctx: ProxyContext) -> Awaitable[None] | None:
    """After the answer: settle limits, record metrics, emit the request's event. Returns
    the settle still to await when the limits are kept in a store (made last: nothing
    before it can leave it un-awaited); else all is done, with no coroutine."""
    u = ctx.usage
    used = 0 if ctx.cache_status in _HITS else u.prompt + u.completion
    admission = ctx.admission
    if (settle := ctx.settle) is not None:  # admitted by `Limits.admit_at_once`
        settle(admission, used if used < MAX_SETTLED_TOKENS else MAX_SETTLED_TOKENS)
        admission = None
    elif isinstance(admission, core.RateGrant):
        # Admitted at once (rates only: in process, or from a prefetch): settled here and
        # now, no coroutine.
        gw.limits.settle_now(admission, used)
        admission = None
    try:  # (neither raises; if one ever did, the limits must still be settled below)
        metrics.record_request(ctx.endpoint, ctx.model, ctx.status, ctx.elapsed_ms() / 1000,
                               ctx.ttft_s, u.prompt, u.completion, ctx.cost_usd,
                               None if ctx.cache_status == "NONE" else ctx.cache_status)
        if ctx.project_id:  # unauthenticated noise is not the project's event
            gw.env.events.put(ctx.event())
    except Exception:
        log.exception("recording request %s failed", ctx.request_id)
    if admission is None:
        return None
    settling: Awaitable[None] = gw.limits.settle(admission, used, ctx.cost_usd)
    plan = admission.plan  # None only for an unlimited caller: no ops at all
    if plan is not None and plan.has_conc:
        # A client that hangs up must not cancel the release of its concurrency slot
        # (the shield's task costs ~10 µs, so only when a slot is held).
        settling = asyncio.shield(settling)
    return settling


def _admitted_at_once(ctx: ProxyContext, limits: Limits, estimate: int) -> bool:
    """Admit the request in one call when the caller's limits can (`Limits.admit_at_once`:
    a rates-only caller seen before); False: `_admit` decides."""
    if (at_once := limits.admit_at_once) is None or (grant := at_once(estimate)) is None:
        return False
    ctx.admission = grant
    ctx.settle = limits.settle_at_once
    ctx.limit_headers = grant.rate_headers
    return True


async def _admit(gw: Gateway, ctx: ProxyContext, estimate: int, limits: Limits) -> None:
    """Admit the request (or raise the 429) when `_admitted_at_once` did not: `admit_now`
    first unless `admit_at_once` was already asked, then `admit` without asking them
    again (a prefetch would count a second miss)."""
    pid, kid = ctx.project_id, ctx.key_id
    admission = gw.limits.admit_now(pid, kid, estimate, limits) \
        if limits.admit_at_once is None else None
    ctx.admission = admission or await gw.limits.admit(pid, kid, estimate, limits, asked=True)
    ctx.limit_headers = gw.limits.headers(ctx.admission)


def _text_prompt_tokens(data: dict[str, Any], model: str) -> int:
    """Prompt tokens of a completions/embeddings request before the call (for token
    limits; chat bodies are counted by `usage.chat_prompt_tokens`); reconciled later."""
    value = data.get("prompt", data.get("input"))
    texts = value if isinstance(value, list) else [value]
    encoding = core.encoding_for_model(model)
    return sum(usage_mod.text_tokens(t, encoding) for t in texts if isinstance(t, str))


async def _proxy(gw: Gateway, req: Request, send: Send, ctx: ProxyContext) -> None:
    token = req.bearer()
    principal = gw.auth.authenticate_now(token, "proxy") \
        or await gw.auth.authenticate(token, "proxy")
    ctx.project_id, ctx.key_id = principal.project_id, principal.key_id
    raw = req.read_already()
    if raw is None:
        raw = await req.body(gw.settings.max_body_bytes)
    raw_headers = req.raw_headers
    present = raw_headers.keys() & _CONTROL_HEADERS  # one C call: no comprehension frame
    plain = not present
    memo_key = (ctx.key_id, ctx.endpoint, raw)
    if plain and (hot := gw.hot.get(memo_key)) is not None:
        if await _serve_hot(gw, send, ctx, principal, hot):
            return
        gw.hot.drop(memo_key)

    data = parse_object(raw)
    ctx.model, ctx.stream = validate(ctx.endpoint, data)
    principal.check_model(ctx.model)
    limits = None
    if ctx.project_id != "*":  # the admin key is not limited
        limits = gw.limits.limits_now(ctx.project_id, ctx.key_id) \
            or await gw.limits.limits_for(ctx.project_id, ctx.key_id)
    estimate = 0
    if limits is not None and not limits.unlimited:
        if ctx.endpoint == "chat/completions":  # the same count from_stream would make
            estimate = usage_mod.chat_prompt_tokens(data)  # as counted from `raw`
            ctx.counted = (raw, estimate)
        else:
            estimate = _text_prompt_tokens(data, ctx.model)
        if not _admitted_at_once(ctx, limits, estimate):
            await _admit(gw, ctx, estimate, limits)
    body_controls = data.get("watchllm")
    if body_controls is None and plain:
        controls = cache_controls.DEFAULT  # the common case: nothing to parse
    elif body_controls is None and present == _MODE_ONLY and raw_headers[_MODE] == b"off":
        controls = cache_controls.OFF
    else:
        controls = cache_controls.parse(req.headers, body_controls)
    if "watchllm" in data:  # our control field never reaches the provider
        data = {k: v for k, v in data.items() if k != "watchllm"}
        raw = orjson.dumps(data)
    ctx.prompt = raw.decode("utf-8", "replace")
    if isinstance(data.get("user"), str):
        ctx.user = data["user"]
    # The per-worker caches' fresh answers are read at once (peek); a coroutine only
    # when one must be read from the store.
    pid = ctx.project_id
    own_keys = {} if pid == "*" else gw.provider_keys.peek(pid)
    if own_keys is None:
        own_keys = await gw.provider_keys.get(pid)
    route = gw.router.resolve(ctx.model, own_keys)
    ctx.provider = route.provider.name

    settings = gw.projects.peek(pid)
    if settings is None:
        settings = await gw.projects.get(pid)
    plan = gw.cache.plan(ctx.project_id, settings.get("cache") or {}, controls, ctx.endpoint,
                         raw, data)
    ctx.cache_status = "BYPASS" if plan is None else "MISS"
    if plan is not None:
        hit = await gw.cache.lookup(plan)
        if hit is None and plan.write:
            hit = await gw.cache.wait_or_lead(plan)
        if hit is not None:
            body = await _replay(send, ctx, hit, data)
            if (controls is cache_controls.DEFAULT and hit.stored is not None
                    and ctx.project_id != "*"):
                gw.hot.put(memo_key, HotRequest(
                    principal, settings, own_keys, limits, plan.key, hit.stored, ctx.model,
                    ctx.stream, ctx.provider, ctx.prompt, ctx.user, estimate, body,
                    _hot_headers(ctx), hit.entry.created, ctx.usage, ctx.cost_saved_usd,
                    ctx.event()))
            return
    entry: CacheEntry | None = None
    try:
        forwarded = raw_headers.keys() & FORWARDED_HEADERS  # one C call; mostly empty
        headers = {k.decode("latin-1"): raw_headers[k].decode("latin-1")
                   for k in forwarded} if forwarded else {}
        call = UpstreamCall(ctx.endpoint, raw, data, ctx.model, ctx.stream, headers, own_keys)
        entry = await _forward(gw, req, send, ctx, call, cache=plan is not None)
    finally:
        if plan is not None and plan.leader:
            await gw.cache.complete(plan, entry)
        elif plan is not None and entry is not None and plan.write:
            await gw.cache.store(plan, entry)


async def _serve_hot(gw: Gateway, send: Send, ctx: ProxyContext, principal: Principal,
                     hot: HotRequest) -> bool:
    """Replay a remembered HIT if everything it was worked out from still holds."""
    if not await remembered(gw, ctx, principal, hot):
        return False
    headers = [("x-request-id", ctx.request_id),
               ("x-watchllm-latency-ms", f"{ctx.elapsed_ms():.2f}"),
               ("age", str(age_s(hot.created))),
               *ctx.limit_headers, *hot.headers]
    await send_body(send, 200, hot.body, headers)
    ctx.ttft_s = ctx.elapsed_ms() / 1000
    return True


def _same_inputs(hot: HotRequest, settings: Any, own_keys: Any, limits: Any) -> bool:
    """Whether the cached inputs just read are the very objects `hot` was worked out from
    (each per-worker cache hands out the same object until it changes)."""
    return (settings is hot.project_settings and own_keys is hot.own_keys
            and limits is hot.limits)


def still_current_now(gw: Gateway, principal: Principal, hot: HotRequest) -> bool | None:
    """`still_current` without a coroutine, when every input can be read at once (fresh
    in-process caches, an in-process KV: the common case); None: await `still_current`."""
    if hot.principal is not principal:
        return False
    pid = principal.project_id
    settings, own_keys = gw.projects.peek(pid), gw.provider_keys.peek(pid)
    limits = gw.limits.limits_now(pid, principal.key_id)
    if settings is None or own_keys is None or limits is None:
        return None
    if not _same_inputs(hot, settings, own_keys, limits):
        return False
    return gw.cache.stored_now(hot.kv_key, hot.stored)


async def still_current(gw: Gateway, principal: Principal, hot: HotRequest) -> bool:
    """Whether `hot` still answers a request of this caller: every cached input the full
    path read is the same object, and the KV still holds the bytes the answer came from."""
    current = still_current_now(gw, principal, hot)
    if current is not None:
        return current
    pid, kid = principal.project_id, principal.key_id
    if not _same_inputs(hot, await gw.projects.get(pid), await gw.provider_keys.get(pid),
                        gw.limits.limits_now(pid, kid) or await gw.limits.limits_for(pid, kid)):
        return False
    return await gw.cache.still_stored(hot.kv_key, hot.stored)


async def remembered(gw: Gateway, ctx: ProxyContext, principal: Principal,
                     hot: HotRequest) -> bool:
    """Whether `hot` still answers this request (`still_current`). If so, `ctx` is filled
    as the full path would have, and the request admitted by its limits."""
    if not await still_current(gw, principal, hot):
        return False
    limits = hot.limits
    ctx.model, ctx.stream = hot.model, hot.stream  # what the full path knows at admission
    if not limits.unlimited and not _admitted_at_once(ctx, limits, hot.estimate):
        await _admit(gw, ctx, hot.estimate, limits)
    ctx.provider, ctx.prompt, ctx.user = hot.provider, hot.prompt, hot.user
    ctx.status, ctx.cache_status = 200, "HIT"
    ctx.usage, ctx.cost_saved_usd, ctx.template = hot.usage, hot.cost_saved_usd, hot.event
    return True


def _hot_headers(ctx: ProxyContext) -> TextHeaders:
    """The response headers of a replay that do not change from one request to the next."""
    return [("x-watchllm-provider", ctx.provider), ("x-watchllm-cache", "HIT"),
            *(SSE_TEXT_HEADERS if ctx.stream else JSON_TEXT_HEADERS)]


async def _forward(gw: Gateway, req: Request, send: Send, ctx: ProxyContext,
                   call: UpstreamCall, cache: bool) -> CacheEntry | None:
    """Send upstream and relay the answer; return a cache entry if it is one to keep."""
    sent = time.perf_counter()
    result, route = await gw.router.send(call)
    ctx.upstream_s = time.perf_counter() - sent
    ctx.provider = route.provider.name
    ctx.status = result.status

    if result.chunks is not None:
        out_headers = response_headers(ctx, result.headers) + SSE_TEXT_HEADERS
        outcome = await forward_stream(send, req.receive, result, out_headers, ctx.started,
                                       req.push)
        ctx.ttft_s = outcome.ttft_s
        raw_stream = outcome.raw()
        # A stream without usage is counted; the admission's estimate is that count when
        # it was made from the same body (the same object).
        counted = ctx.counted[1] if ctx.counted and ctx.counted[0] is call.body else None
        ctx.usage, ctx.response = usage_mod.from_stream(raw_stream, call.data, counted)
        ctx.cost_usd = _cost(gw, ctx)
        if outcome.disconnected:
            ctx.status, ctx.error_type = 499, "client_disconnected"
            ctx.error_message = "client disconnected mid-stream; upstream request cancelled"
            return None
        if outcome.error:
            ctx.error_type, ctx.error_message = "upstream_stream_error", outcome.error
            return None
        if not cache:
            return None
        entry = entry_from_stream(ctx.endpoint, raw_stream)
        if entry is not None:
            entry.usage = entry.usage or ctx.usage.as_openai()
            entry.cost_usd = ctx.cost_usd
        return entry

    body = result.body or b""
    if result.status >= 500:
        metrics.upstream_error(ctx.provider, "5xx")
        raise _upstream_failure(ctx, result)
    entry = None
    if result.status == 200:
        ctx.usage, ctx.response, usage_doc = usage_mod.from_body(ctx.endpoint, body)
        ctx.cost_usd = _cost(gw, ctx)
        if cache:
            entry = CacheEntry(ctx.endpoint, body=body, usage=usage_doc, cost_usd=ctx.cost_usd)
    else:
        ctx.error_type, ctx.error_message = "upstream_error", error_message(body)
    ctx.ttft_s = ctx.elapsed_ms() / 1000
    out = response_headers(ctx, result.headers)
    content_type = result.headers.get("content-type", "application/json")
    out.append(("content-type",
                content_type if content_type.isascii() else _as_sent(content_type)))
    await send_body(send, result.status, body, out)
    return entry


def _cost(gw: Gateway, ctx: ProxyContext) -> float:
    u = ctx.usage
    return gw.prices.cost_usd(ctx.model, u.prompt, u.completion, u.cached)


async def _replay(send: Send, ctx: ProxyContext, hit: CacheHit, data: dict[str, Any]) -> bytes:
    """Answer from the cache, in the form this request asked for; returns the body sent."""
    entry = hit.entry
    ctx.status, ctx.cache_status = 200, hit.status
    ctx.usage = usage_mod.from_usage_doc(entry.usage)
    ctx.cost_saved_usd = entry.cost_usd
    headers = response_headers(ctx, {})
    headers.append(("age", str(hit.age_s)))
    if hit.similarity is not None:
        headers.append(("x-watchllm-cache-similarity", f"{hit.similarity:.4f}"))
    if ctx.stream:
        body = sse_body(entry, _include_usage(data))
        await send_body(send, 200, body, headers + SSE_TEXT_HEADERS)
    else:
        body = as_json(entry)
        await send_body(send, 200, body, headers + JSON_TEXT_HEADERS)
    ctx.ttft_s = ctx.elapsed_ms() / 1000
    return body


async def list_models(gw: Gateway, req: Request, send: Send) -> None:
    """Models the gateway can route: the default provider's list plus the mock's."""
    await gw.auth.authenticate(req.bearer(), "proxy")
    models: list[dict[str, Any]] = []
    default = gw.router.providers[gw.settings.default_provider]
    getter = getattr(default, "get", None)
    if getter is not None and gw.router.usable(gw.settings.default_provider):
        result = await getter("models", gw.settings.connect_timeout_s, 30.0)
        if result.status == 200 and result.body:
            models = list(orjson.loads(result.body).get("data", []))
    models += [{"id": m, "object": "model", "created": 0, "owned_by": "watchllm-mock"}
               for m in ("mock-1", "mock-embedding-1")]
    await send_body(send, 200, orjson.dumps({"object": "list", "data": models}),
                    JSON_TEXT_HEADERS)
