"""Per-request cache controls, from headers or the equivalent `watchllm.cache` body field.

    Cache-Control: no-cache            skip the read (still refresh the entry)
    Cache-Control: no-store            skip the write
    Cache-Control: max-age=N           entry TTL in seconds (also x-watchllm-cache-ttl)
    x-watchllm-cache-namespace: NAME   separate entries per namespace
    x-watchllm-cache-mode: off|exact|semantic
    x-watchllm-cache-threshold: 0.93   similarity threshold for semantic hits

Body form: ``{"watchllm": {"cache": {"mode": "semantic", "ttl": 60, "namespace": "x",
"threshold": 0.9, "no_cache": true, "no_store": true}}}`` — stripped before forwarding.
Headers win over the body. Invalid values are a 400 naming the control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watchllm.errors import InvalidRequestError

MODES = ("off", "exact", "semantic")
_NS_MAX = 128


@dataclass(frozen=True, slots=True)
class CacheControls:
    mode: str | None = None  # None: the project's / global default
    read: bool = True
    write: bool = True
    ttl_s: float | None = None
    namespace: str = ""
    threshold: float | None = None


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}", param=name) from None
    if not lo <= number <= hi:
        raise InvalidRequestError(f"{name} must be between {lo} and {hi}, got {value!r}",
                                  param=name)
    return number


DEFAULT = CacheControls()
OFF = CacheControls(mode="off")  # `x-watchllm-cache-mode: off` alone: common, nothing to parse
HEADER_NAMES = (b"cache-control", b"x-watchllm-cache-mode", b"x-watchllm-cache-ttl",
                b"x-watchllm-cache-namespace", b"x-watchllm-cache-threshold")


def parse(headers: dict[str, str], body_field: Any) -> CacheControls:
    body = body_field.get("cache") if isinstance(body_field, dict) else None
    if body_field is not None and not isinstance(body_field, dict):
        raise InvalidRequestError("'watchllm' must be an object", param="watchllm")
    if body is not None and not isinstance(body, dict):
        raise InvalidRequestError("'watchllm.cache' must be an object", param="watchllm.cache")
    body = body or {}

    mode = headers.get("x-watchllm-cache-mode") or body.get("mode")
    if mode is not None and mode not in MODES:
        raise InvalidRequestError(f"cache mode must be one of {', '.join(MODES)}, got {mode!r}",
                                  param="x-watchllm-cache-mode")
    directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
    read = "no-cache" not in directives and not body.get("no_cache", False)
    write = "no-store" not in directives and not body.get("no_store", False)

    ttl: float | None = None
    for d in directives:
        if d.startswith("max-age="):
            ttl = _number(d[8:], "Cache-Control max-age", 0, 10 * 365 * 86400)
    if "x-watchllm-cache-ttl" in headers:
        ttl = _number(headers["x-watchllm-cache-ttl"], "x-watchllm-cache-ttl", 0, 10 * 365 * 86400)
    elif ttl is None and body.get("ttl") is not None:
        ttl = _number(body["ttl"], "watchllm.cache.ttl", 0, 10 * 365 * 86400)

    namespace = headers.get("x-watchllm-cache-namespace") or body.get("namespace") or ""
    if not isinstance(namespace, str) or len(namespace) > _NS_MAX:
        raise InvalidRequestError(f"cache namespace must be a string of at most {_NS_MAX} chars",
                                  param="x-watchllm-cache-namespace")
    threshold = headers.get("x-watchllm-cache-threshold") or body.get("threshold")
    return CacheControls(
        mode=mode, read=read, write=write, ttl_s=ttl, namespace=namespace,
        threshold=None if threshold is None else _number(threshold, "x-watchllm-cache-threshold",
                                                         0.0, 1.0),
    )
