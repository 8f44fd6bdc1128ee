"""Prometheus metrics: cheap recording helpers and the `GET /metrics` handler.

Several granian workers: set `PROMETHEUS_MULTIPROC_DIR` before any worker imports
prometheus_client (`watchllm.entrypoints.serve` does it in the serving process; workers
inherit it). Each worker then writes its samples to mmap'd files there and a scrape,
answered by any worker, sums them. Live gauges of dead workers are dropped at scrape.

`record_request` (once per request) adds to an in-process tally (`core.RequestTally`, one
call); the sums reach prometheus-client once a second and before every scrape (`_Pending`;
cost in `bench/limits/run.py`, recorded in docs/limits.md). Rare events (429s, upstream
errors) go straight in. Label values are bounded: models beyond the first `MAX_MODELS`
seen are recorded as "other", so clients cannot explode the series count.
Without prometheus-client installed every helper is a no-op and /metrics answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

from watchllm import core

if TYPE_CHECKING:
    from watchllm.app import Gateway
    from watchllm.http.asgi import Request, Send

try:
    import prometheus_client as prom
    from prometheus_client import multiprocess
except ImportError:  # the embedded install may not carry the server extra
    prom = None  # type: ignore[assignment]

MAX_MODELS = 200
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_DEAD_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Metrics:
    def __init__(self) -> None:
        assert prom is not None
        self.registry = prom.CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = prom.Counter("watchllm_requests", "Proxied requests.",
                                     ("route", "model", "status"), registry=r)
        self.latency = prom.Histogram("watchllm_request_duration_seconds",
                                      "Whole-request latency.", ("route",), registry=r,
                                      buckets=LATENCY_BUCKETS)
        self.ttft = prom.Histogram("watchllm_time_to_first_token_seconds",
                                   "Time to the first byte of the answer.", ("route",),
                                   registry=r, buckets=TTFT_BUCKETS)
        self.tokens = prom.Counter("watchllm_tokens", "Tokens by model.", ("model", "kind"),
                                   registry=r)
        self.cost = prom.Counter("watchllm_cost_usd", "Estimated spend by model (USD).",
                                 ("model",), registry=r)
        self.upstream_errors = prom.Counter("watchllm_upstream_errors", "Provider failures.",
                                            ("provider", "kind"), registry=r)
        self.cache = prom.Counter("watchllm_cache_lookups", "Response-cache outcomes.",
                                  ("outcome",), registry=r)
        self.rate_limited = prom.Counter("watchllm_rate_limited", "Requests answered 429.",
                                         ("scope", "limit"), registry=r)
        self.limits_unavailable = prom.Counter(
            "watchllm_limits_backend_unavailable",
            "Limit decisions taken without the counters backend (fail open/closed).",
            ("mode",), registry=r)
        self.limits_prefetch = prom.Counter(
            "watchllm_limits_prefetch",
            "Rate capacity taken ahead on Redis: grants made, refused (near the limit or "
            "backend down), returned; denials that waited for other workers' grants.",
            ("event",), registry=r)
        self.metadata_reads = prom.Counter(
            "watchllm_metadata_reads", "Reads of the metadata store by the per-worker caches "
            "(keys, limits, project settings, provider keys).", ("cache",), registry=r)
        self.queue_depth = prom.Gauge("watchllm_queue_depth", "Items waiting, summed over "
                                      "live workers.", ("queue",), registry=r,
                                      multiprocess_mode="livesum")
        self.backend_up = prom.Gauge("watchllm_backend_up", "1 when the backend answers "
                                     "(minimum over live workers).", ("backend",), registry=r,
                                     multiprocess_mode="livemin")
        self.pipeline = prom.Gauge("watchllm_event_pipeline", "Event pipeline state (queue "
                                   "depth, spool bytes, batches sent/failed, dead-lettered, "
                                   "insert latency), summed over live workers.", ("stat",),
                                   registry=r, multiprocess_mode="livesum")
        self.children: dict[tuple[Any, ...], Any] = {}
        self.models: set[str] = set()


_m: _Metrics | None = _Metrics() if prom is not None else None


def _child(metric: Any, *labels: str) -> Any:
    assert _m is not None
    key = (id(metric), *labels)
    child = _m.children.get(key)
    if child is None:
        child = _m.children[key] = metric.labels(*labels)
    return child


def _model(model: str) -> str:
    assert _m is not None
    if model in _m.models:
        return model
    if len(_m.models) >= MAX_MODELS or len(model) > 100:
        return "other"
    _m.models.add(model)
    return model


_LATENCY = (*LATENCY_BUCKETS, float("inf"))
_TTFT = (*TTFT_BUCKETS, float("inf"))


class _Pending:
    """Per-request samples summed in process (`core.RequestTally`: one call per request),
    handed to prometheus-client once a second.

    A prometheus-client increment takes a lock (and, multiprocess, writes an mmap'd file):
    ~1-3 µs each, several per request. The tally's call is a tenth of that. The cost: a
    scrape may miss up to FLUSH_S of other workers' samples (this worker flushes first).
    """

    def __init__(self) -> None:
        # (route, model as sent, status) -> [requests, prompt tokens, completion tokens, USD,
        # latency buckets + [sum], time-to-first-token buckets + [sum]], and cache outcome
        # -> count; the model label is bounded and the histograms summed per route at flush.
        self.tally = core.RequestTally(list(_LATENCY), list(_TTFT))
        self.scheduled = False


FLUSH_S = 1.0
_pending = _Pending()


def flush() -> None:
    """Hand the pending samples to prometheus-client (called by the timer and by scrapes)."""
    m, p = _m, _pending
    p.scheduled = False
    if m is None:
        return
    requests, cache = p.tally.drain()
    for outcome, n in cache.items():
        _child(m.cache, outcome).inc(n)
    hist: dict[tuple[int, str], list[float]] = {}  # (which, route) -> buckets + [sum]
    for (route, model, status), (n, prompt, completion, usd, *both) in requests.items():
        label = _model(model) if model else "none"
        _child(m.requests, route, label, str(status)).inc(n)
        if prompt:
            _child(m.tokens, label, "prompt").inc(prompt)
        if completion:
            _child(m.tokens, label, "completion").inc(completion)
        if usd:
            _child(m.cost, label).inc(usd)
        for which, h in enumerate(both):
            if not any(h[:-1]):  # no sample (TTFT of requests that had none): no series
                continue
            into = hist.get((which, route))
            if into is None:
                hist[(which, route)] = list(h)
            else:
                for i, v in enumerate(h):
                    into[i] += v
    for (which, route), h in hist.items():
        child = _child(m.latency if which == 0 else m.ttft, route)
        for i, hits in enumerate(h[:-1]):
            if hits:
                child._buckets[i].inc(hits)  # the same updates Histogram.observe makes
        child._sum.inc(h[-1])


def _schedule() -> None:
    _pending.scheduled = True
    try:
        asyncio.get_running_loop().call_later(FLUSH_S, flush)
    except RuntimeError:  # no event loop (scripts, sync tests): flush now
        flush()


def record_request(route: str, model: str, status: int, duration_s: float,
                   ttft_s: float | None = None, prompt_tokens: int = 0,
                   completion_tokens: int = 0, cost_usd: float = 0.0,
                   outcome: str | None = None) -> None:
    """One proxied request, at its end (after the last byte or the error); `outcome`: its
    x-watchllm-cache value (HIT, MISS, SEMANTIC_HIT, BYPASS...), if it had one."""
    if _m is None:
        return
    _pending.tally.record(route, model, status, duration_s, ttft_s, prompt_tokens,
                          completion_tokens, cost_usd, outcome)
    if not _pending.scheduled:
        _schedule()


# Rare events: recorded directly.
def upstream_error(provider: str, kind: str) -> None:
    """kind: e.g. "connect", "timeout", "5xx", "stream"."""
    if _m is not None:
        _child(_m.upstream_errors, provider, kind).inc()


def rate_limited(scope: str, limit: str) -> None:
    if _m is not None:
        _child(_m.rate_limited, scope, limit).inc()


def limits_unavailable(mode: str) -> None:
    if _m is not None:
        _child(_m.limits_unavailable, mode).inc()


def limits_prefetch(event: str) -> None:
    if _m is not None:
        _child(_m.limits_prefetch, event).inc()


def metadata_read(cache: str) -> None:
    if _m is not None:
        _child(_m.metadata_reads, cache).inc()


def set_queue_depth(queue: str, depth: int) -> None:
    if _m is not None:
        _child(_m.queue_depth, queue).set(depth)


def set_backend_up(backend: str, up: bool) -> None:
    if _m is not None:
        _child(_m.backend_up, backend).set(1 if up else 0)


def set_pipeline_stats(stats: dict[str, float]) -> None:
    if _m is not None:
        for name, value in stats.items():
            _child(_m.pipeline, name).set(value)


def _drop_dead_workers(directory: str) -> None:
    """Live gauges of workers that have exited (granian respawns) must not count."""
    for name in os.listdir(directory):
        match = _DEAD_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, another user's
            pass


def render() -> bytes:
    """The exposition text: this process's registry, or every worker's files."""
    assert prom is not None and _m is not None
    flush()
    directory = multiprocess_dir()
    if directory is None:
        return prom.generate_latest(_m.registry)
    _drop_dead_workers(directory)
    registry = prom.CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    return prom.generate_latest(registry)


async def metrics_endpoint(gw: Gateway, req: Request, send: Send) -> None:
    """`GET /metrics`. Serve it on an internal interface: it is not authenticated."""
    from watchllm.http.asgi import send_body

    if prom is None:
        await send_body(send, 503, b"prometheus-client is not installed (pip install "
                        b"'watchllm[server]')\n", [(b"content-type", b"text/plain")])
        return
    with contextlib.suppress(Exception):  # the gateway may not have started its env
        env = gw.env
        set_queue_depth("events", env.events.depth())
        snapshot = getattr(env.events, "snapshot", None)
        if callable(snapshot):
            set_pipeline_stats({k: float(v) for k, v in snapshot().items()})
        degraded = getattr(env.kv, "degraded", None)
        if degraded is not None:  # Redis: serving from in-process fallbacks while it is down
            set_backend_up("redis", not degraded)
    # Reading many workers' files is file I/O: keep it off the event loop.
    body = await asyncio.to_thread(render) if multiprocess_dir() else render()
    await send_body(send, 200, body, [(b"content-type", prom.CONTENT_TYPE_LATEST.encode())])
