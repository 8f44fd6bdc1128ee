"""LimitsService on both backends: exact counts under concurrency and across processes,
TPM reconciliation, budgets and quotas with their period, concurrency, restarts, failure."""

from __future__ import annotations

import asyncio
import calendar
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from watchllm.errors import RateLimitError, ServiceUnavailableError
from watchllm.limits import Admission, Limits, LimitsService, QuotaExceededError, Scope
from watchllm.limits.redis import RedisLimiter
from watchllm.settings import Settings

from .conftest import RedisCounters, needs_redis, redis_client

ROOT = Path(__file__).resolve().parents[2]
NOV_23 = calendar.timegm((2026, 11, 23, 12, 0, 0))


class Clock:
    def __init__(self, t: float = NOV_23) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def service(counters: Any, clock: Clock | None = None, **settings: Any) -> LimitsService:
    return LimitsService(counters, Settings(**settings), clock=clock or Clock())


async def admitted(svc: LimitsService, project: str, n: int, key: str = "k",
                   tokens: int = 10) -> list[Admission]:
    async def one() -> Admission | None:
        try:
            return await svc.admit(project, key, tokens)
        except RateLimitError:
            return None

    return [a for a in await asyncio.gather(*(one() for _ in range(n))) if a is not None]


async def test_exactly_n_under_concurrency(counters: Any, project: str) -> None:
    svc = service(counters, default_rpm=25)
    assert len(await admitted(svc, project, 100)) == 25


@needs_redis
async def test_two_services_two_connections_one_limit(project: str) -> None:
    """Two 'gateways' with their own Redis connections, Redis's clock (no injection)."""
    a, b = RedisCounters(redis_client()), RedisCounters(redis_client())
    limits = Limits(project=Scope(rpm=20))  # T = 3 s: nothing refills during the test
    svc_a = LimitsService(a, Settings())
    svc_b = LimitsService(b, Settings())

    async def burst(svc: LimitsService) -> int:
        ok = 0
        for _ in range(30):
            try:
                await svc.admit(project, "k", 0, limits)
                ok += 1
            except RateLimitError:
                pass
        return ok

    started = time.monotonic()
    counts = await asyncio.gather(*(burst(s) for s in (svc_a, svc_b, svc_a, svc_b)))
    assert time.monotonic() - started < 3.0
    assert sum(counts) == 20 and all(c > 0 for c in counts[:2])
    await a.close()
    await b.close()


@needs_redis
def test_two_os_processes_share_one_limit(project: str) -> None:
    start_at = time.time() + 1.5  # both processes fire together
    args = [sys.executable, "-m", "tests.limits._worker", project, "60", "37",
            str(NOV_23 * 1000), str(start_at)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(2)]
    counts = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert sum(counts) == 37, counts
    assert all(p.returncode == 0 for p in procs)


async def test_tpm_reconciled_to_real_usage(counters: Any, project: str) -> None:
    svc = service(counters, default_tpm=1000)
    first = await svc.admit(project, "k", 100)
    assert dict(svc.headers(first))["x-ratelimit-remaining-tokens"] == "900"
    await svc.settle(first, real_tokens=700, cost_usd=0.0)  # 100 estimated, 700 used
    second = await svc.admit(project, "k", 100)
    assert dict(svc.headers(second))["x-ratelimit-remaining-tokens"] == "200"
    await svc.settle(second, real_tokens=0, cost_usd=0.0)  # failed call: estimate refunded
    with pytest.raises(RateLimitError) as err:
        await svc.admit(project, "k", 301)
    assert "tokens per minute" in err.value.message
    assert err.value.headers["x-ratelimit-remaining-tokens"] == "300"
    with pytest.raises(RateLimitError) as too_big:  # more than the whole minute's tokens
        await svc.admit(project, "k", 1001)
    assert too_big.value.headers["x-should-retry"] == "false"
    assert "retry-after" not in too_big.value.headers


async def test_budget_exhausted_then_reset_next_period(counters: Any, project: str) -> None:
    clock = Clock()
    svc = service(counters, clock)
    limits = Limits(budget_usd=1.0, period="month")
    for cost in (0.6, 0.5):  # the second goes over: admitted while spend < budget
        await svc.settle(await svc.admit(project, "k", 10, limits), 10, cost)
    with pytest.raises(QuotaExceededError) as err:
        await svc.admit(project, "k", 10, limits)
    exc = err.value
    assert (exc.status, exc.type, exc.code) == (429, "insufficient_quota", "insufficient_quota")
    december = calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert int(exc.headers["retry-after"]) == december - NOV_23
    assert exc.headers["x-should-retry"] == "false"
    clock.t = december - 1
    with pytest.raises(QuotaExceededError):
        await svc.admit(project, "k", 10, limits)
    clock.t = december + 1  # a new period: a new counter
    await svc.admit(project, "k", 10, limits)
    # Raising the budget unblocks the same period at once.
    clock.t = december - 1
    await svc.admit(project, "k", 10, Limits(budget_usd=5.0, period="month"))


async def test_request_and_token_quotas(counters: Any, project: str) -> None:
    clock = Clock()
    svc = service(counters, clock)
    limits = Limits(max_requests=3, max_tokens=1000, period="day")
    for _ in range(3):
        await svc.settle(await svc.admit(project, "k", 10, limits), 200, 0.0)
    with pytest.raises(QuotaExceededError, match="requests quota"):
        await svc.admit(project, "k", 10, limits)
    clock.t += 86_400
    tokens_only = Limits(max_tokens=1000, period="day")
    a = await svc.admit(project, "k", 900, tokens_only)
    with pytest.raises(QuotaExceededError, match="tokens quota"):
        await svc.admit(project, "k", 200, tokens_only)
    await svc.settle(a, 100, 0.0)  # 900 estimated, 100 real: 800 back
    await svc.admit(project, "k", 200, tokens_only)


async def test_concurrency_slots_released_on_settle(counters: Any, project: str) -> None:
    svc = service(counters, default_max_concurrent=2)
    held = [await svc.admit(project, "k"), await svc.admit(project, "k")]
    with pytest.raises(RateLimitError, match="concurrent"):
        await svc.admit(project, "k")
    await svc.settle(held[0], 0, 0.0)
    await svc.settle(held[0], 0, 0.0)  # idempotent: does not free a second slot
    held.append(await svc.admit(project, "k"))
    with pytest.raises(RateLimitError):
        await svc.admit(project, "k")


async def test_key_and_project_limits_both_apply(counters: Any, project: str) -> None:
    svc = service(counters)
    limits = Limits(project=Scope(rpm=5), key=Scope(rpm=3))
    denied: list[str] = []
    ok = {"a": 0, "b": 0}
    for key in ("a", "b"):
        for _ in range(4):
            try:
                await svc.admit(project, key, 0, limits)
                ok[key] += 1
            except RateLimitError as exc:
                denied.append(exc.message)
    assert ok == {"a": 3, "b": 2}  # key a stops at its 3, key b at the project's 5
    assert "on key a" in denied[0] and "on project" in denied[-1]


@needs_redis
async def test_limits_survive_a_restart(project: str) -> None:
    first = RedisCounters(redis_client())
    svc = LimitsService(first, Settings(default_rpm=4))
    assert len(await admitted(svc, project, 4)) == 4
    await first.close()  # the gateway stops; a new one starts with new connections
    second = RedisCounters(redis_client())
    restarted = LimitsService(second, Settings(default_rpm=4))
    with pytest.raises(RateLimitError):
        await restarted.admit(project, "k", 10)
    await second.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down_fails_open_or_closed(mode: str, project: str) -> None:
    from watchllm import metrics

    client = redis_client(port=1)  # nothing listens there
    svc = LimitsService(RedisCounters(client), Settings(default_rpm=1, limits_fail_mode=mode))
    before = _unavailable_count(metrics, mode)
    if mode == "open":
        for _ in range(3):
            admission = await svc.admit(project, "k", 10)
            assert admission.degraded and svc.headers(admission) == []
            await svc.settle(admission, 10, 1.0)
    else:
        with pytest.raises(ServiceUnavailableError) as err:
            await svc.admit(project, "k", 10)
        assert err.value.status == 503 and err.value.headers["retry-after"] == "1"
    assert _unavailable_count(metrics, mode) > before
    await client.aclose()


def _unavailable_count(metrics: Any, mode: str) -> float:
    if metrics._m is None:
        return 1e9
    value = metrics._m.registry.get_sample_value(
        "watchllm_limits_backend_unavailable_total", {"mode": mode})
    return value or 0.0


async def test_unlimited_and_admin_cost_no_round_trip(project: str) -> None:
    class Exploding:
        async def apply(self, ops: Any, now_ms: Any = None) -> Any:
            raise AssertionError("no round trip expected")

    svc = LimitsService(Exploding(), Settings())  # type: ignore[arg-type]
    admission = await svc.admit(project, "k", 10)
    await svc.settle(admission, 10, 1.0)
    assert svc.headers(admission) == []
    await svc.admit("*", "admin", 10)


def test_redis_limiter_is_what_a_counters_adapter_delegates_to() -> None:
    assert callable(RedisLimiter(object()).apply)


async def test_in_process_fast_path_answers_as_the_general_path() -> None:
    """Rates-only callers in process are admitted by the rate table (one `RateTable.admit`
    call, its `RateGrant` the admission) and settled by `settle_now`. A twin service forced onto the
    general path (ops, outcome, `_settle_local`) must give the same 429s, headers, state."""
    import random

    from watchllm.env.embedded.memory import MemoryCounters

    rng = random.Random(3)
    clock = Clock()
    fast = service(MemoryCounters(), clock, default_rpm=40, default_tpm=2_000)
    general = service(MemoryCounters(), clock, default_rpm=40, default_tpm=2_000)
    assert general._local is not None
    general.admit_now = lambda *args: None  # type: ignore[method-assign]
    limits = Limits(project=Scope(tpm=3_000), key=Scope(rpm=40, tpm=2_000))
    outcomes = {"admitted": 0, "denied": 0}
    for _ in range(3000):
        clock.t += rng.choice([0, 0, 0.01, 0.3, 2, 20])
        tokens = rng.choice([1, 10, 90, 400, 2_500])
        answers = []
        for svc in (fast, general):
            try:
                adm = await svc.admit("p", "k", tokens, limits)
            except RateLimitError as exc:
                answers.append((exc.status, exc.message, exc.headers))
                continue
            answers.append(svc.headers(adm))
            await svc.settle(adm, tokens + random.Random(clock.t).randint(-5, 300), 0.0)
        assert answers[0] == answers[1]
        outcomes["denied" if isinstance(answers[0], tuple) else "admitted"] += 1
        assert fast._local.rates.to_dict() == general._local.rates.to_dict()  # type: ignore[union-attr]
    assert min(outcomes.values()) > 300, outcomes


async def test_a_stored_rate_of_0_keeps_the_rest_of_the_plan() -> None:
    """Rates of 0 are refused on write now; a plan stored before keeps its budget and
    quotas, and the 0 is read as 1 per minute (the nearest rate), not as unlimited."""
    from watchllm.env.embedded.memory import MemoryCounters

    class Stored:
        async def project_limits(self, project_id: str) -> dict[str, Any]:
            return {"budget_usd": 5, "max_requests": 100, "key": {"rpm": 0}}

        async def key_limits(self, key_id: str) -> dict[str, Any] | None:
            return {"tpm": 0}

    svc = LimitsService(MemoryCounters(), Settings(), Stored(), clock=Clock())
    limits = await svc.limits_for("p", "k")
    assert limits.budget_usd == 5 and limits.max_requests == 100
    assert limits.key.rpm == 1 and limits.key.tpm == 1


async def test_a_huge_reported_usage_settles(counters: Any, project: str) -> None:
    """Usage counts are capped at 2^63-1 each; their sum still settles (no overflow)."""
    svc = service(counters, default_rpm=100, default_tpm=10_000)
    adm = await svc.admit(project, "k", 10)
    await svc.settle(adm, 2 * (2**63 - 1), 0.0)
    with pytest.raises(RateLimitError):
        await svc.admit(project, "k", 10)  # the bucket is in (clamped) debt


async def test_admit_at_once_is_the_callers_own_and_answers_as_admit() -> None:
    """The request path's one-call admission (`Limits.admit_at_once`, then
    `settle_at_once`) is set only on the Limits object the service caches for that caller
    and only on the system clock; its grants count in the same table, and when it says
    None, `admit` raises the 429."""
    from watchllm.env.embedded.memory import MemoryCounters

    svc = LimitsService(MemoryCounters(), Settings(default_rpm=3, default_tpm=1_000))
    limits = await svc.limits_for("p", "k")
    assert limits.admit_at_once is None  # nothing built yet
    first = svc.admit_now("p", "k", 10, limits) or await svc.admit("p", "k", 10, limits)
    admit, settle = limits.admit_at_once, limits.settle_at_once
    assert admit is not None and settle is not None
    grants = [admit(10), admit(10)]
    assert all(g is not None for g in grants)
    assert dict(grants[1].rate_headers)["x-ratelimit-remaining-requests"] == "0"
    assert admit(10) is None  # the 4th of 3 per minute
    with pytest.raises(RateLimitError) as exc:
        await svc.admit("p", "k", 10, limits)
    assert exc.value.status == 429 and "retry-after" in dict(exc.value.headers)
    settle(grants[0], 1 << 53)  # the route's clamp: settles, the bucket in debt
    assert grants[0].settled and not grants[1].settled
    svc.settle_now(first, 10)
    # forget() (a plan change) takes the one-call admission away with the templates: a
    # request then builds them again, from the new limits.
    svc.forget("p")
    assert limits.admit_at_once is None and limits.settle_at_once is None

    # Someone else's Limits object (could be shared by callers), or an injected clock: no
    # one-call admission; `admit_now` still answers.
    other = Limits(key=Scope(rpm=5))
    assert svc.admit_now("p", "k2", 1, other) or await svc.admit("p", "k2", 1, other)
    assert svc.admit_now("p", "k2", 1, other) is not None
    assert other.admit_at_once is None
    clocked = service(MemoryCounters(), default_rpm=3)
    mine = await clocked.limits_for("p", "k")
    await clocked.admit("p", "k", 1, mine)
    assert clocked.admit_now("p", "k", 1, mine) is not None
    assert mine.admit_at_once is None
