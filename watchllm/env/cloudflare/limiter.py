"""Counters on a Durable Object: the limits design for Cloudflare (docs/cloudflare.md).

KV cannot count (eventually consistent, ~1 write/s per key) and the rate-limit binding
has fixed 10 s/60 s periods with limits set in wrangler.toml, not per plan. A Durable
Object is one single-threaded instance per name, so it runs the reference semantics
(`watchllm.limits.ops.MemoryLimiter`) exactly, like the in-process adapter does:

    Worker ── DurableObjectCounters.apply(ops) ──fetch──▶ LimiterObject("<project>")
                                                            LimiterState.handle(...)
                                                            storage.put("state", ...)

Every key of a batch carries its project as a `{hash tag}` (limits/service.py), so one
batch goes to one object (one per project: projects never contend with each other). Keys
without a tag share one object named "". The object's state is written to its durable
storage after every change, so limits survive eviction and restarts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from watchllm import core
from watchllm.env.base import CountersUnavailable
from watchllm.env.cloudflare._js import JsException, error_text, js_value, unwrap
from watchllm.limits.ops import MemoryLimiter, Op, OpResult, Outcome

log = logging.getLogger("watchllm.limits")
_OP_FIELDS = ("kind", "key", "limit", "window_ms", "cost", "mode", "member")


def shard(key: str) -> str:
    """The object a key lives in: its `{tag}` (the project), else the shared "" object."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start else ""


class LimiterState:
    """What one Durable Object holds and does; plain Python, runtime-independent."""

    def __init__(self) -> None:
        self.limiter = MemoryLimiter()
        self.counters: dict[str, tuple[float, float]] = {}  # key -> (value, expiry ms)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        # No await between reading and writing state: with the object's single thread,
        # every request is atomic with respect to every other.
        op = request.get("op")
        now = request.get("now_ms")
        clock = int(time.time() * 1000) if now is None else int(now)
        if op == "apply":
            ops = [Op(*o) for o in request["ops"]]
            outcome = await self.limiter.apply(ops, clock)
            return {"allowed": outcome.allowed, "denied": outcome.denied,
                    "now_ms": outcome.now_ms,
                    "results": [[r.remaining, r.reset_ms, r.retry_ms] for r in outcome.results]}
        key = str(request["key"])
        value, expires = self.counters.get(key, (0.0, 0.0))
        if expires and expires <= clock:
            value, expires = 0.0, 0.0
        if op == "incr":
            value += float(request["amount"])
            expires = expires or clock + float(request["ttl_s"]) * 1000
            self.counters[key] = (value, expires)
            if len(self.counters) > 10_000:
                self.counters = {k: v for k, v in self.counters.items() if v[1] > clock}
            return {"value": value}
        if op == "get":
            return {"value": value}
        raise ValueError(f"unknown limiter op {op!r}")

    def dump(self) -> str:
        lim = self.limiter
        return json.dumps({"rate": lim.rates.to_dict(), "conc": lim._conc, "quota": lim._quota,
                           "charged": lim._charged, "counters": self.counters},
                          separators=(",", ":"))

    def load(self, text: str | None) -> None:
        if not text:
            return
        data = json.loads(text)
        lim = self.limiter
        lim.rates = core.RateTable()
        for key, state in data.get("rate", {}).items():
            try:
                lim.rates[key] = tuple(state)
            except (TypeError, ValueError, OverflowError):  # unreadable: the bucket restarts
                log.warning("limiter state: dropped an unreadable rate bucket %r", key)
        lim._conc = dict(data.get("conc", {}))
        lim._quota = {k: tuple(v) for k, v in data.get("quota", {}).items()}
        # A bucket's charge count must survive with its level, or a REFUND after a restart
        # could give back what others charged since (ops.py, REFUND).
        # (C, expiry, generation, R); a shorter entry (saved by an earlier version) is
        # dropped: its bucket starts a new generation, so no older grant is refunded.
        lim._charged = {k: tuple(v) for k, v in data.get("charged", {}).items() if len(v) == 4}
        self.counters = {k: tuple(v) for k, v in data.get("counters", {}).items()}


class DurableObjectCounters:
    """The Counters seam, talking to `LimiterObject` instances through their stubs."""

    URL = "https://limiter.internal/"

    def __init__(self, namespace: Any) -> None:
        self._ns = unwrap(namespace)
        self._stubs: dict[str, Any] = {}

    def _stub(self, name: str) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            if len(self._stubs) > 10_000:
                self._stubs.clear()
            stub = self._stubs[name] = self._ns.get(self._ns.idFromName(name))
        return stub

    async def _call(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        init = js_value({"method": "POST", "body": json.dumps(payload, separators=(",", ":")),
                         "headers": {"content-type": "application/json"}})
        try:
            response = await self._stub(name).fetch(self.URL, init)
            text = await response.text()
        except JsException as exc:
            raise CountersUnavailable(f"limiter object {name!r}: {error_text(exc)}") from None
        if int(response.status) != 200:
            raise CountersUnavailable(f"limiter object {name!r} answered {response.status}: "
                                      f"{str(text)[:200]}")
        result: dict[str, Any] = json.loads(str(text))
        return result

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        names = {shard(op.key) for op in ops}
        name = names.pop() if len(names) == 1 else ""
        payload = {"op": "apply", "now_ms": now_ms,
                   "ops": [[getattr(op, f) for f in _OP_FIELDS] for op in ops]}
        r = await self._call(name, payload)
        return Outcome(bool(r["allowed"]), int(r["denied"]), int(r["now_ms"]),
                       tuple(OpResult(*map(int, x)) for x in r["results"]))

    async def incr(self, key: str, amount: float, ttl_s: float) -> float:
        r = await self._call(shard(key), {"op": "incr", "key": key, "amount": amount,
                                          "ttl_s": ttl_s})
        return float(r["value"])

    async def get(self, key: str) -> float:
        return float((await self._call(shard(key), {"op": "get", "key": key}))["value"])

    async def close(self) -> None:
        self._stubs.clear()
