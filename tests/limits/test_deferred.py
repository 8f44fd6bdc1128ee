"""One round trip per request: settle's deltas ride on the next admit, a timer flushes the
rest, close() flushes at shutdown. Round trips are counted by Redis itself (INFO
commandstats) on a private redis-server, so other users of the shared one cannot disturb
the count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from watchllm.env.base import CountersUnavailable
from watchllm.env.embedded.memory import MemoryCounters
from watchllm.limits import Limits, LimitsService, Scope
from watchllm.limits.ops import FORCE, PEEK, QUOTA, RATE, Op
from watchllm.settings import Settings

from .conftest import RedisCounters, needs_redis, redis_client
from .test_service import NOV_23, Clock

# Small enough that the rate keys outlive the test: their Redis TTL is real time (until
# the bucket would be full again), while these tests freeze the limits' clock.
TPM = 5000
PLAN = Limits(project=Scope(rpm=1000, tpm=TPM), key=Scope(rpm=1000, tpm=TPM),
              budget_usd=1000.0, max_tokens=10**9, period="month")


class RemoteMemory:
    """In-process counters seen as a remote backend (no `local_limiter`): settle defers its
    deltas as on Redis. Plain MemoryCounters settle at once (no round trip to save)."""

    def __init__(self) -> None:
        self.inner = MemoryCounters()
        self.down = False

    async def apply(self, ops: Any, now_ms: int | None = None) -> Any:
        if self.down:
            raise CountersUnavailable("down")
        return await self.inner.apply(ops, now_ms)


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The deferral runs on any backend that is not in this process."""
    if request.param == "memory":
        yield RemoteMemory()
        return
    c = RedisCounters(redis_client())
    yield c
    await c.close()


async def test_in_process_settle_applies_at_once(project: str) -> None:
    """Embedded: nothing is deferred; the reconciliation is in the counters at once."""
    counters = MemoryCounters()
    svc = LimitsService(counters, Settings(), clock=Clock(), flush_interval_s=3600)
    for _ in range(3):
        await svc.settle(await svc.admit(project, "k", 10, PLAN), 30, 0.25)
    assert svc.pending() == 0
    assert await _used(counters, f"wl:{{{project}}}:k:k:tpm", TPM) == 90
    assert await _used(counters, f"wl:{{{project}}}:tpm", TPM) == 90
    assert await _spent_micro(counters, project, 10**9) == 750_000


async def _commandstats(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def _used(counters: Any, key: str, limit: int) -> int:
    """Tokens used in a rate bucket, read without writing (PEEK of cost 0)."""
    out = await counters.apply([Op(RATE, key, limit, 60_000, 0, PEEK)], NOV_23 * 1000)
    return limit - int(out.results[0].remaining)


async def _spent_micro(counters: Any, project: str, budget_micro: int) -> int:
    key = f"wl:{{{project}}}:q:usd:2026-11"
    out = await counters.apply([Op(QUOTA, key, budget_micro, 0, 0, FORCE)], NOV_23 * 1000)
    return budget_micro - int(out.results[0].remaining)


async def test_one_redis_round_trip_per_request_with_tpm_and_budget(
        redis_counters: Any, project: str) -> None:
    """rpm+tpm per key and project, a budget and a token quota: Redis counts exactly one
    EVALSHA per request (admit), settle's reconciliation included, and nothing else."""
    svc = LimitsService(redis_counters, Settings(), clock=Clock(), flush_interval_s=3600)
    client = redis_counters.admin
    await svc.settle(await svc.admit(project, "k", 10, PLAN), 25, 0.001)  # script loaded
    await svc.flush()
    before = await _commandstats(client)
    n = 40
    for _ in range(n):
        admission = await svc.admit(project, "k", 10, PLAN)
        assert svc.headers(admission)
        await svc.settle(admission, 25, 0.001)  # 15 more tokens than estimated, $0.001
    after = await _commandstats(client)
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    delta.pop("info", None)
    assert delta.pop("evalsha") == n, delta
    # Everything else ran inside the scripts (GET/SET/DEL); no top-level command was sent.
    assert set(delta) <= {"get", "set", "del"}, delta
    assert svc.pending() == 4  # the last request's key tpm, project tpm, tokens, budget
    await svc.close()
    assert svc.pending() == 0
    # Exact: every request's real usage is counted, none lost, none twice.
    assert await _used(redis_counters, f"wl:{{{project}}}:k:k:tpm", TPM) == 25 * (n + 1)
    assert await _used(redis_counters, f"wl:{{{project}}}:tpm", TPM) == 25 * (n + 1)
    assert await _spent_micro(redis_counters, project, 10**9) == 1000 * (n + 1)


async def test_a_held_lease_is_released_at_once(redis_counters: Any, project: str) -> None:
    """With max_concurrent the release cannot wait: settle makes its own round trip and
    takes the project's pending deltas along."""
    svc = LimitsService(redis_counters, Settings(default_tpm=1000, default_max_concurrent=1),
                        clock=Clock(), flush_interval_s=3600)
    other = LimitsService(redis_counters, Settings(default_max_concurrent=1), clock=Clock())
    a = await svc.admit(project, "k", 100)
    await svc.settle(a, 300, 0.0)
    assert svc.pending() == 0
    await other.admit(project, "k", 0)  # the slot is free for another worker at once
    assert await _used(redis_counters, f"wl:{{{project}}}:k:k:tpm", 1000) == 300


async def test_deferred_delta_is_applied_by_the_next_admit(counters: Any, project: str) -> None:
    svc = LimitsService(counters, Settings(default_tpm=1000), clock=Clock(),
                        flush_interval_s=3600)
    key = f"wl:{{{project}}}:k:k:tpm"
    await svc.settle(await svc.admit(project, "k", 100), 700, 0.0)
    assert svc.pending() == 1
    assert await _used(counters, key, 1000) == 100  # not yet reconciled in the counters
    second = await svc.admit(project, "k", 100)  # carries +600, then checks
    assert svc.pending() == 0
    assert dict(svc.headers(second))["x-ratelimit-remaining-tokens"] == "200"
    assert await _used(counters, key, 1000) == 800


async def test_a_denied_admit_still_applies_the_deltas_it_carries(
        counters: Any, project: str) -> None:
    svc = LimitsService(counters, Settings(default_tpm=1000), clock=Clock(),
                        flush_interval_s=3600)
    await svc.settle(await svc.admit(project, "k", 100), 950, 0.0)
    with pytest.raises(Exception, match="tokens per minute"):
        await svc.admit(project, "k", 100)  # 950 + 100 > 1000: denied, the +850 kept
    assert svc.pending() == 0
    assert await _used(counters, f"wl:{{{project}}}:k:k:tpm", 1000) == 950


async def test_the_timer_flushes_what_no_admit_carried(counters: Any, project: str) -> None:
    """Another worker sees this worker's reconciled usage within the flush interval."""
    svc = LimitsService(counters, Settings(default_tpm=1000), clock=Clock(),
                        flush_interval_s=0.05)
    other = LimitsService(counters, Settings(default_tpm=1000), clock=Clock())
    await svc.settle(await svc.admit(project, "k", 100), 400, 0.0)
    await svc.settle(await svc.admit(project, "k2", 100), 0, 0.0)  # a refund, other key
    assert svc.pending() == 1  # k's +300 rode on k2's admit; k2's -100 waits
    await asyncio.sleep(0.3)  # six flush intervals
    assert svc.pending() == 0
    seen = await other.admit(project, "k", 0)
    assert dict(other.headers(seen))["x-ratelimit-remaining-tokens"] == "600"
    assert await _used(counters, f"wl:{{{project}}}:k:k2:tpm", 1000) == 0  # refunded


async def test_close_flushes_every_pending_delta(counters: Any, project: str) -> None:
    """Shutdown loses nothing: deltas of many projects and keys, budget included."""
    svc = LimitsService(counters, Settings(), clock=Clock(), flush_interval_s=3600)
    projects = [f"{project}-{i}" for i in range(5)]
    for p in projects:
        for _ in range(3):
            await svc.settle(await svc.admit(p, "k", 10, PLAN), 30, 0.25)
    assert svc.pending() == 5 * 4  # per project: key tpm, project tpm, token quota, budget
    await svc.close()
    assert svc.pending() == 0
    for p in projects:
        assert await _used(counters, f"wl:{{{p}}}:tpm", TPM) == 90
        assert await _spent_micro(counters, p, 10**9) == 750_000


async def test_failed_flush_keeps_the_deltas(project: str) -> None:
    """A backend outage during a flush loses nothing: the deltas wait for the next try."""
    counters = RemoteMemory()
    svc = LimitsService(counters, Settings(default_tpm=1000), clock=Clock(),
                        flush_interval_s=3600)
    await svc.settle(await svc.admit(project, "k", 100), 300, 0.0)
    counters.down = True
    await svc.flush()
    assert svc.pending() == 1
    counters.down = False
    await svc.close()  # the breaker is open; close still tries once
    assert await _used(counters, f"wl:{{{project}}}:k:k:tpm", 1000) == 300


async def test_gateway_shutdown_loses_no_delta(private_redis: int, tmp_path: Path) -> None:
    """Through the ASGI app: the last request's reconciliation reaches Redis at shutdown."""
    import orjson
    import redis.asyncio as redis

    from watchllm.app import Gateway
    from watchllm.env.embedded import build_env
    from watchllm.settings import load_settings

    counters = RedisCounters(redis.Redis(port=private_redis))

    async def env_factory(settings: Any) -> Any:
        env = await build_env(settings)
        env.counters = counters  # shared counters, as in the self-hosted runtime
        return env

    settings = load_settings({"WATCHLLM_DATA_DIR": str(tmp_path), "WATCHLLM_CLICKHOUSE_URL": "off",
                              "WATCHLLM_DEFAULT_TPM": "100"}, None)
    gw = Gateway(settings, env_factory)
    await gw.startup()
    project = await gw.store.create_project("p")
    record, key = await gw.store.create_key(project.id)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "query_string": b"", "headers": [(b"authorization", f"Bearer {key}".encode()),
                                              (b"content-type", b"application/json"),
                                              (b"x-watchllm-cache-mode", b"off")]}
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await gw(scope, receive, send)
    assert sent[0]["status"] == 200
    usage = orjson.loads(sent[1]["body"])["usage"]
    assert gw.limits.pending() == 1  # real tokens differ from the estimate: a deferred delta
    await gw.shutdown()
    client = redis.Redis(port=private_redis)
    tpm_key = f"wl:{{{project.id}}}:k:{record.id}:tpm"
    raw = await client.get(tpm_key)
    await client.aclose()
    assert raw is not None
    text = raw if isinstance(raw, str) else raw.decode()
    ms, _rem, limit, *_ = (int(x) for x in text.split(":"))
    used_ms = ms - int(time.time() * 1000)  # time until the bucket is full again
    assert abs(used_ms * limit // 60_000 - usage["total_tokens"]) <= 1


@pytest.mark.parametrize("backend", ["rust", "python"])
async def test_a_slots_settled_deltas_sum_like_add(backend: str) -> None:
    """A prefetched caller's settles sum in its slot (`core.HeldSlot`); the deferred
    deltas collect the sum into each of its token ops as `add` would; the slot asks to be
    watched once per collection; a zero sum leaves nothing."""
    from watchllm import _twins
    from watchllm.limits.deferred import DeferredDeltas, add

    mod: Any = _twins if backend == "python" else pytest.importorskip("watchllm._core")

    async def apply(ops: list[Op]) -> bool:
        return True

    deferred, expected = DeferredDeltas(apply, 60), DeferredDeltas(apply, 60)
    calls: list[str] = []
    ops = (Op(RATE, "k:tpm", 100, 60_000, 0), Op(RATE, "p:tpm", 500, 60_000, 0))

    def on_pending() -> None:
        calls.append("pending")
        deferred.watch("p", slot, ops)

    slot = mod.HeldSlot(lambda now: None, lambda now: None, on_pending)
    held = mod.HeldRates(10, 1000, 0.0, 5.0, [], slot)
    for real in (17, 7, 50):  # each grant estimates 10 tokens
        grant = held.take(10, 1.0)
        slot.settle(grant, real)
        slot.settle(grant, 99)  # once per grant
        pending = expected.of("p")
        for op in ops:
            add(pending, op, real - 10)
        expected.done("p")
    assert calls == ["pending"] and slot.pending == 44 and deferred
    got = deferred.take("p")
    assert got is not None and got == expected.take("p")
    assert {k: (op.cost, op.limit) for k, op in got.items()} == {"k:tpm": (44, 100),
                                                                  "p:tpm": (44, 500)}
    assert slot.pending == 0 and not deferred
    slot.settle(held.take(10, 1.0), 13)  # watched again after the collection
    slot.settle(held.take(10, 1.0), 7)  # +3 then -3: nothing left to send
    assert calls == ["pending", "pending"] and deferred
    assert deferred.count() == 0 and deferred.take("p") is None and not deferred
    await deferred.close()
    await expected.close()


async def test_a_slot_watched_during_a_slow_flush_is_still_flushed() -> None:
    """A slot asks for the timer once; a tick that lands while an earlier flush still
    waits on the backend ticks again, so the slot's sum is applied without more settles."""
    from watchllm import _twins
    from watchllm.limits.deferred import DeferredDeltas, add

    release = asyncio.Event()
    applied: list[list[Op]] = []

    async def apply(ops: list[Op]) -> bool:
        if not applied:
            applied.append([])
            await release.wait()  # the first flush hangs on a slow backend
        applied.append(ops)
        return True

    deferred = DeferredDeltas(apply, 0.01)
    ops = (Op(RATE, "k:tpm", 100, 60_000, 0),)
    add(deferred.of("q"), ops[0], 1)
    deferred.done("q")  # arms the timer: its flush hangs
    await asyncio.sleep(0.03)
    slot = _twins.HeldSlot(lambda now: None, lambda now: None,
                           lambda: deferred.watch("p", slot, ops))
    slot.settle(_twins.HeldRates(5, 100, 0.0, 5.0, [], slot).take(10, 1.0), 17)
    await asyncio.sleep(0.03)  # the slot's tick lands during the hung flush
    release.set()
    for _ in range(100):
        if any(op.key == "k:tpm" and op.cost == 7 for batch in applied for op in batch):
            break
        await asyncio.sleep(0.01)
    assert any(op.cost == 7 for batch in applied for op in batch), applied
    await deferred.close()
