"""Prefetched rate capacity on Redis (limits/prefetch.py): many requests per round trip,
and still exact — never more than the limit, and never fewer because a worker holds
capacity it does not use. Round trips are counted by Redis itself (INFO commandstats)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from watchllm import core
from watchllm.errors import RateLimitError
from watchllm.limits import Limits, LimitsService, Scope
from watchllm.limits.ops import FORCE, PEEK, RATE, Op
from watchllm.limits.service import Admitted
from watchllm.settings import Settings

from .conftest import RedisCounters, lean_client, needs_redis
from .test_deferred import RemoteMemory, _commandstats, _used
from .test_service import NOV_23, Clock

NOV_23_MS = NOV_23 * 1000


async def _wave(svc: LimitsService, project: str, n: int, limits: Limits,
                tokens: int = 10) -> list[Admitted]:
    """n concurrent requests, then a short pause (a grant's round trip can land)."""

    async def one() -> Admitted | None:
        admission = svc.admit_now(project, "k", tokens, limits)
        try:
            return admission or await svc.admit(project, "k", tokens, limits)
        except RateLimitError:
            return None

    out = [a for a in await asyncio.gather(*(one() for _ in range(n))) if a is not None]
    await asyncio.sleep(0.003)
    return out


async def test_many_requests_per_round_trip_and_exact_usage(redis_counters: Any,
                                                            project: str) -> None:
    """rpm + tpm per key and project: far fewer EVALSHA than requests, and after close()
    the buckets hold exactly the requests made and the real tokens (unused prefetch
    refunded, reconciliation applied). Limits small enough that the frozen clock's buckets
    outlive the test (their Redis TTL runs in real time)."""
    plan = Limits(project=Scope(rpm=2000, tpm=200_000), key=Scope(rpm=2000, tpm=200_000))
    svc = LimitsService(redis_counters, Settings(), clock=Clock())
    first = await _wave(svc, project, 1, plan, 40)  # the script is loaded, template built
    await svc.settle(first[0], 100, 0.0)
    before = await _commandstats(redis_counters.admin)
    n = prefetched = 0
    for _ in range(10):
        for admission in await _wave(svc, project, 15, plan, 40):
            n += 1
            assert dict(svc.headers(admission))["x-ratelimit-limit-requests"] == "2000"
            if isinstance(admission, core.RateGrant):  # admitted from the prefetch
                prefetched += 1
                svc.settle_now(admission, 100)
                svc.settle_now(admission, 100)  # once only
            else:
                await svc.settle(admission, 100, 0.0)
    after = await _commandstats(redis_counters.admin)
    assert n == 150
    assert prefetched > 100, prefetched
    assert after["evalsha"] - before["evalsha"] < 40, after["evalsha"] - before["evalsha"]
    assert svc._prefetch is not None and svc._prefetch.granted >= 3
    await svc.close()
    for key in (f"wl:{{{project}}}:k:k:", f"wl:{{{project}}}:"):
        assert await _used(redis_counters, key + "rpm", 2000) == 151
        assert await _used(redis_counters, key + "tpm", 200_000) == 151 * 100


@needs_redis
async def test_two_workers_one_limit_exactly_with_uneven_load(project: str) -> None:
    """Worker B takes prefetches for 30 requests and goes quiet; worker A then sends 1,000
    against the one project limit of 600. Exactly 600 are admitted: A's requests denied
    while B still holds unused capacity wait for it to come back instead of answering 429."""
    a, b = RedisCounters(lean_client()), RedisCounters(lean_client())
    limits = Limits(project=Scope(rpm=600))
    clock = Clock()
    settings = Settings(limits_prefetch_ms=1000)  # B holds its prefetch while A runs
    svc_a = LimitsService(a, settings, clock=clock)
    svc_b = LimitsService(b, settings, clock=clock)

    async def worker(svc: LimitsService, waves: int, size: int) -> int:
        return sum([len(await _wave(svc, project, size, limits, 0)) for _ in range(waves)])

    waited = _prefetch_count("waited")
    counts = [await worker(svc_b, 3, 10)]
    assert svc_b._prefetch is not None and svc_b._prefetch.granted > 0
    held = svc_b._templates[(project, "k")].prefetch.grant
    assert held is not None and held.held.req > 0  # unused capacity B holds
    counts.append(await worker(svc_a, 40, 25))
    assert sum(counts) == 600, counts
    assert svc_a._prefetch is not None and svc_a._prefetch.granted > 0
    assert _prefetch_count("waited") > waited  # visible in /metrics
    for svc in (svc_a, svc_b):
        await svc.close()
    assert await _used(a, f"wl:{{{project}}}:rpm", 600) == 600
    await a.close()
    await b.close()


@needs_redis
async def test_prefetched_headers_count_down(project: str) -> None:
    counters = RedisCounters(lean_client())
    limits = Limits(key=Scope(rpm=1000, tpm=100_000))
    svc = LimitsService(counters, Settings(), clock=Clock())
    seen = []
    for _ in range(10):
        for admission in await _wave(svc, project, 5, limits, tokens=100):
            h = dict(svc.headers(admission))
            assert h["x-ratelimit-limit-tokens"] == "100000"
            assert h["x-ratelimit-reset-requests"].endswith("s")
            seen.append((isinstance(admission, core.RateGrant),
                         int(h["x-ratelimit-remaining-requests"])))
    prefetched = [r for p, r in seen if p]
    assert len(prefetched) > 20
    assert all(x > y for x, y in itertools.pairwise(prefetched)), prefetched
    assert all(r <= 1000 - i - 1 for i, (_, r) in enumerate(seen))
    await svc.close()
    await counters.close()


@needs_redis
async def test_off_with_a_prefetch_of_0(project: str) -> None:
    counters = RedisCounters(lean_client())
    svc = LimitsService(counters, Settings(limits_prefetch_ms=0), clock=Clock())
    limits = Limits(key=Scope(rpm=10_000))
    for _ in range(5):
        assert all(not isinstance(a, core.RateGrant) for a in await _wave(svc, project, 5, limits))
    assert svc._prefetch is None
    await counters.close()


@needs_redis
async def test_close_gives_every_prefetch_back(project: str) -> None:
    """A prefetch granted before or during close() is returned: the bucket holds only the
    request made, and no registration is left to make other workers wait."""
    import redis.asyncio as redis

    from .conftest import REDIS_DB

    counters = RedisCounters(lean_client())
    svc = LimitsService(counters, Settings(), clock=Clock())
    limits = Limits(key=Scope(rpm=600))
    await svc.admit(project, "k", 0, limits)  # starts a grant
    await svc.close()
    await asyncio.sleep(0.02)  # a grant still on its way lands, and goes straight back
    bucket = f"wl:{{{project}}}:k:k:rpm"
    assert await _used(counters, bucket, 600) == 1
    admin = redis.Redis(db=REDIS_DB)
    assert await admin.zcard(bucket + ":held") == 0
    await admin.aclose()
    await counters.close()


def _prefetch_count(event: str) -> float:
    from watchllm import metrics

    assert metrics._m is not None  # prometheus-client is a dependency
    value = metrics._m.registry.get_sample_value("watchllm_limits_prefetch_total",
                                                 {"event": event})
    return value or 0.0


@pytest.fixture(params=["remote memory", pytest.param("redis", marks=needs_redis)])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Two handles on one shared counters backend (as two workers would have)."""
    if request.param == "remote memory":
        one = RemoteMemory()
        yield one, one
        return
    a, b = RedisCounters(lean_client()), RedisCounters(lean_client())
    yield a, b
    await a.close()
    await b.close()


async def test_a_return_refunds_only_what_the_drain_left(shared: Any, project: str) -> None:
    """B takes a prefetch of 16 at t=0 and uses 1 of it. By t=1.5 s the bucket (600 rpm:
    one request per 100 ms) has drained 15 of B's 17 units. A then fills the bucket (598).
    When B returns its 15 unused units, only the 2 still in the bucket may come back: A
    gets exactly 2 more. A plain refund of 15 would let A past the limit (613 in all)."""
    counters_a, counters_b = shared
    clock = Clock()
    limits = Limits(project=Scope(rpm=600))
    svc_b = LimitsService(counters_b, Settings(), clock=clock)
    svc_a = LimitsService(counters_a, Settings(limits_prefetch_ms=0), clock=clock)
    await svc_b.admit(project, "b", 0, limits)  # per request; starts B's grant
    for _ in range(100):
        await asyncio.sleep(0.001)
        if svc_b.admit_now(project, "b", 0, limits) is not None:  # 1 used from the grant
            break
    assert svc_b._prefetch is not None and svc_b._prefetch.granted == 1
    clock.t += 1.5
    burst = await _wave(svc_a, project, 700, limits, 0)
    assert len(burst) == 598
    await svc_b.close()  # B's return: REFUND of 15 unused units
    more = await _wave(svc_a, project, 50, limits, 0)
    assert len(more) == 2, len(more)
    assert await _used(counters_a, f"wl:{{{project}}}:rpm", 600) == 600


class _SlowRemote(RemoteMemory):
    """In-process counters seen as remote, each answer 5 ms after the batch ran."""

    async def apply(self, ops: Any, now_ms: int | None = None) -> Any:
        out = await super().apply(ops, now_ms)
        await asyncio.sleep(0.005)
        return out


async def test_a_denial_during_this_workers_own_return_asks_again_without_waiting(
        project: str) -> None:
    """The bucket is full; this worker's prefetch is on its way back when a request is
    denied. The batch counted that registration: it is this worker's own, so the request
    waits for the return (not a whole prefetch time) and is admitted from the refund."""
    counters = _SlowRemote()
    svc = LimitsService(counters, Settings(), clock=Clock())
    limits = Limits(key=Scope(rpm=6000))
    await svc.admit(project, "k", 0, limits)
    await asyncio.sleep(0.02)  # the grant lands
    assert svc._prefetch is not None
    (grant, caller), = svc._prefetch._live.values()
    bucket = grant.rows[0][1]
    inner = counters.inner
    left = (await inner.apply([Op(RATE, bucket, 6000, 60_000, 0, PEEK)], NOV_23_MS)
            ).results[0].remaining
    await inner.apply([Op(RATE, bucket, 6000, 60_000, left, FORCE)], NOV_23_MS)  # full
    caller.off_until = time.monotonic() + 60  # no new grant in the way
    waited = _prefetch_count("waited")
    svc._prefetch._expire(grant, caller)  # its return starts, and is on its way
    admission = await svc.admit(project, "k", 0, limits)  # denied, then admitted
    assert admission.outcome is not None and admission.outcome.allowed
    assert _prefetch_count("waited") == waited  # not mistaken for another worker's


@needs_redis
async def test_admit_at_once_takes_from_the_prefetch_exactly(project: str) -> None:
    """On the system clock, a caller's requests are admitted from the prefetch in one call
    (`Limits.admit_at_once`, the slot's `take` reading the clock itself) and settled with
    `settle_at_once`; after close() Redis holds exactly the requests and the real tokens,
    and each request that found no grant counted one miss."""
    counters = RedisCounters(lean_client())
    svc = LimitsService(counters, Settings(default_rpm=5_000, default_tpm=500_000))
    limits = await svc.limits_for(project, "k")
    first = svc.admit_now(project, "k", 40, limits) or await svc.admit(project, "k", 40, limits)
    await svc.settle(first, 100, 0.0) if not isinstance(first, core.RateGrant) \
        else svc.settle_now(first, 100)
    admit, settle = limits.admit_at_once, limits.settle_at_once
    assert admit is not None and settle is not None
    for _ in range(200):  # the first grant lands
        if (grant := admit(40)) is not None:
            break
        await asyncio.sleep(0.005)
    assert grant is not None and svc._prefetch is not None
    n, nones, missed = 1, 0, svc._prefetch.missed
    settle(grant, 100)
    while n < 60:
        grant = admit(40)
        if grant is None:  # a refill on its way: what the route does, admit() answers
            nones += 1
            grant = await svc.admit(project, "k", 40, limits, asked=True)
            await svc.settle(grant, 100, 0.0) if not isinstance(grant, core.RateGrant) \
                else svc.settle_now(grant, 100)
        else:
            settle(grant, 100)
        n += 1
    missed = svc._prefetch.missed - missed
    await svc.close()
    now_ms = int(time.time() * 1000)
    for key, limit in ((f"wl:{{{project}}}:k:k:rpm", 5_000),
                       (f"wl:{{{project}}}:k:k:tpm", 500_000)):
        out = await counters.apply([Op(RATE, key, limit, 60_000, 0, PEEK)], now_ms)
        used = limit - int(out.results[0].remaining)
        # what 61 requests used (rpm: 1 each, tpm: 100 each), give or take the bucket's
        # drain since the first of them (< 1 s: at most limit/60 per second)
        expected = 61 if key.endswith("rpm") else 6_100
        assert expected - limit // 60 <= used <= expected, (key, used)
    assert missed == nones < 10, (missed, nones)  # each miss counted once
    await counters.close()
