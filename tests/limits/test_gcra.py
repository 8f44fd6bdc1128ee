"""The rate algorithm against its exact definition, and the Lua port against the Python.

Reference: ITU-T I.371's continuous-state leaky bucket, in exact rational arithmetic
(Fraction). A bucket of capacity W drains 1 per ms; a cell of cost n adds n*T (T = W/L)
and conforms iff the bucket then holds at most W. It is a different formulation from the
virtual-scheduling GCRA we implement, and the two must agree on every decision.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from fractions import Fraction
from typing import Any

import pytest

from watchllm import core
from watchllm.limits.ops import (
    ADJUST,
    CHECK,
    CONC,
    FORCE,
    GEN,
    GRANT,
    PEEK,
    QUOTA,
    RATE,
    REFUND,
    RELEASE,
    MemoryLimiter,
    Op,
)
from watchllm.limits.redis import RedisLimiter
from watchllm.limits.reset import duration

from .conftest import REDIS_KINDS, client_of, close_client, redis_client

NOW0 = 1_790_000_000_000


class LeakyBucket:
    def __init__(self, limit: int, window_ms: int) -> None:
        self.t, self.w = Fraction(window_ms, limit), Fraction(window_ms)
        self.x, self.lct = Fraction(0), 0

    def offer(self, now: int, n: int) -> tuple[bool, int]:
        """(conforms, remaining whole cells afterwards) at integer time `now`."""
        x = max(Fraction(0), self.x - (now - self.lct))
        ok = x + n * self.t <= self.w
        if ok:
            self.x, self.lct = x + n * self.t, now
        level = x + n * self.t if ok else x
        return ok, int((self.w - level) / self.t)


def trace(seed: int, steps: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    now, out = NOW0, []
    for _ in range(steps):
        now += rng.choice([0, 0, 1, 2, 5, 50, 333, 857, 1000, 4000, 20_000])
        out.append((now, rng.choice([0, 1, 1, 1, 2, 3])))
    return out


async def _limiter(kind: str) -> tuple[Any, Any]:
    if kind == "memory":
        return MemoryLimiter(), None
    client = client_of(kind)
    return RedisLimiter(client), client


@pytest.mark.parametrize("kind", ["memory", *REDIS_KINDS])
@pytest.mark.parametrize(("limit", "window_ms"), [(7, 60_000), (60, 60_000), (3, 1_000),
                                                  (1000, 60_000), (13, 7_001)])
async def test_gcra_matches_exact_leaky_bucket(kind: str, limit: int, window_ms: int) -> None:
    limiter, client = await _limiter(kind)
    key = "wl:{t" + secrets.token_hex(6) + "}:rate"
    ref = LeakyBucket(limit, window_ms)
    admitted = 0
    for now, n in trace(limit * 31 + window_ms, 1500):
        cost = n * (limit // 7 or 1)
        out = await limiter.apply([Op(RATE, key, limit, window_ms, cost)], now)
        ok, remaining = ref.offer(now, cost)
        assert (out.allowed, out.results[0].remaining) == (ok, remaining), (now, cost)
        admitted += ok
    assert 0 < admitted < 1500
    if client is not None:
        await close_client(client)


async def test_burst_then_steady_rate_bound() -> None:
    """Token-bucket bound: in any interval of length d at most L + d*L/W are admitted."""
    limiter, limit, window = MemoryLimiter(), 10, 60_000
    times = [now for now in range(NOW0, NOW0 + 300_000, 500)  # every 0.5 s for 5 minutes
             if (await limiter.apply([Op(RATE, "k", limit, window)], now)).allowed]
    steady = 300_000 // (window // limit)  # one per T = 6 s after the burst
    assert limit + steady - 2 <= len(times) <= limit + steady
    for i, start in enumerate(times):
        for d in (1_000, 30_000, 60_000):
            inside = sum(1 for t in times[i:] if t < start + d)
            assert inside <= limit + d * limit // window


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_lua_port_matches_python_on_random_batches(kind: str) -> None:
    """Every kind and mode, several ops per batch, all-or-nothing writes (ADJUST: at once,
    kept when denied), same results."""
    client = client_of(kind)
    red, mem = RedisLimiter(client), MemoryLimiter()
    rng = random.Random(7)
    tag = "{t" + secrets.token_hex(6) + "}"  # fresh keys: earlier runs left state in Redis
    now = NOW0
    for _ in range(4000):
        now += rng.choice([0, 0, 1, 3, 17, 250, 1000, 7000])
        ops, used = [], set()
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice([RATE, RATE, CONC, QUOTA])
            key = f"wl:{tag}:{kind}:{rng.randint(0, 2)}"
            if kind == QUOTA:
                key += f":{now // 100_000}"  # the period is part of a quota key
            if key in used:
                continue
            used.add(key)
            limit = {RATE: rng.choice([1, 3, 7, 60]), CONC: 2, QUOTA: 50}[kind]
            window = {RATE: rng.choice([60_000, 7_001]), CONC: 5_000,
                      QUOTA: (now // 100_000 + 1) * 100_000}[kind]
            modes = [CHECK, RELEASE] if kind == CONC else [CHECK, CHECK, PEEK, FORCE, ADJUST]
            mode = rng.choice(modes)
            cost = rng.randint(-3, 8) if mode in (FORCE, ADJUST) else rng.randint(0, 4)
            ops.append(Op(kind, key, limit, window, cost, mode, str(rng.randint(0, 3))))
        assert await red.apply(ops, now) == await mem.apply(ops, now), ops
    await close_client(client)


def _random_ops(rng: random.Random, tag: str, now: int) -> list[Op]:
    ops, used = [], set()
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice([RATE, RATE, CONC, QUOTA])
        key = f"wl:{tag}:{kind}:{rng.randint(0, 2)}"
        if kind == QUOTA:
            key += f":{now // 100_000}"
        if key in used:
            continue
        used.add(key)
        limit = {RATE: rng.choice([1, 3, 7, 60]), CONC: 2, QUOTA: 50}[kind]
        window = {RATE: rng.choice([60_000, 7_001]), CONC: 5_000,
                  QUOTA: (now // 100_000 + 1) * 100_000}[kind]
        mode = rng.choice([CHECK, RELEASE] if kind == CONC else [CHECK, PEEK, FORCE, ADJUST])
        cost = rng.randint(-3, 8) if mode in (FORCE, ADJUST) else rng.randint(0, 4)
        ops.append(Op(kind, key, limit, window, cost, mode, str(rng.randint(0, 3))))
    return ops


def _count_scripts(client: Any) -> list[int]:
    """Counts the EVALSHA commands `client` is asked to send, on any of its entry points
    (the lean client's `submit`/`execute`, redis-py's `execute_command`)."""
    count = [0]
    for name in ("submit", "execute", "execute_command"):
        method = getattr(client, name, None)
        if method is None:
            continue

        def counted(*args: Any, _method: Any = method, **kw: Any) -> Any:
            sent = _method(*args, **kw)
            count[0] += "EVALSHA" in args[:2] and sent is not None  # submit: None = not sent
            return sent

        setattr(client, name, counted)
    return count


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_one_script_call_per_tick_matches_python(kind: str) -> None:
    """The batches of one loop tick go to Redis in one EVALSHA; each is decided exactly as
    on its own, in call order (Python applies them one by one), each with its own clock."""
    client = client_of(kind)
    calls = _count_scripts(client)
    red, mem = RedisLimiter(client), MemoryLimiter()
    rng = random.Random(11)
    tag = "{t" + secrets.token_hex(6) + "}"
    now, sent = NOW0, 0
    for _ in range(300):
        # The fake clock must run ahead of real time: Redis expires keys in real time.
        now += rng.choice([17, 250, 1000, 7000])
        tick = [(_random_ops(rng, tag, now), now + j // 4) for j in range(rng.randint(1, 12))]
        got = await asyncio.gather(*(red.apply(ops, t) for ops, t in tick))
        for (ops, t), outcome in zip(tick, got, strict=True):
            assert outcome == await mem.apply(ops, t), ops
        sent += len(tick)
    assert calls[0] == 300 < sent
    await close_client(client)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_a_request_cancelled_before_the_send_is_not_counted(kind: str) -> None:
    client = client_of(kind)
    red = RedisLimiter(client)
    key = "wl:{t" + secrets.token_hex(6) + "}:rpm"
    first = asyncio.ensure_future(red.apply([Op(RATE, key, 10, 60_000)], NOW0))
    second = asyncio.ensure_future(red.apply([Op(RATE, key, 10, 60_000)], NOW0))
    await asyncio.sleep(0)  # both have joined this tick; the send runs at its end
    second.cancel()
    assert (await first).results[0].remaining == 9
    with pytest.raises(asyncio.CancelledError):
        await second
    peek = await red.apply([Op(RATE, key, 10, 60_000, 0, PEEK)], NOW0)
    assert peek.results[0].remaining == 9  # one counted, not two
    await close_client(client)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_script_flushed_from_redis_is_loaded_again(kind: str) -> None:
    """After a Redis restart or failover the script cache is empty: the next tick loads it
    (once) and every request of the tick still gets its own answer."""
    client, admin = client_of(kind), redis_client()
    red = RedisLimiter(client)
    key = "wl:{t" + secrets.token_hex(6) + "}:rpm"
    assert (await red.apply([Op(RATE, key, 10, 60_000)], NOW0)).allowed
    await admin.script_flush()
    got = await asyncio.gather(*(red.apply([Op(RATE, key, 10, 60_000)], NOW0)
                                 for _ in range(3)))
    assert sorted(o.results[0].remaining for o in got) == [6, 7, 8]
    await close_client(client)
    await admin.aclose()


def test_adjust_writes_what_apply_writes() -> None:
    """The in-process settle (`MemoryLimiter.adjust`) leaves the same state as `apply`."""
    rng = random.Random(5)
    a, b = MemoryLimiter(), MemoryLimiter()
    now = NOW0
    for _ in range(3000):
        now += rng.choice([0, 1, 17, 250, 7000])
        checks = [op for op in _random_ops(rng, "{t}", now) if op.mode == CHECK]
        assert a.apply_now(checks, now) == b.apply_now(checks, now)
        settle = [Op(op.kind, op.key, op.limit, op.window_ms, rng.randint(-20, 20), ADJUST)
                  if op.kind != CONC else Op(CONC, op.key, op.limit, op.window_ms, 0, RELEASE,
                                             op.member) for op in checks]
        a.adjust(settle, now)
        b.apply_now(settle, now)
        assert (a.rates.to_dict(), a._conc, a._quota) == (b.rates.to_dict(), b._conc, b._quota)


def test_rate_table_admit_decides_and_writes_what_apply_does() -> None:
    """The in-process fast path (`rates.admit` + `rates.settle`, what LimitsService uses
    for rates-only callers) against `apply_now` + `adjust` on the same ops: every decision,
    every header value, every state, through denials, plan changes and refunds."""
    rng = random.Random(11)
    fast, ref = MemoryLimiter(), MemoryLimiter()
    now, denied = NOW0, 0
    for _ in range(5000):
        now += rng.choice([0, 0, 1, 17, 250, 7000, 61_000, 4_000_000])
        rows = [("k:rpm", rng.choice([3, 5, 60]), 60_000, False),
                ("k:tpm", rng.choice([50, 400, 10**9]), 60_000, True),
                ("p:tpm", 300, rng.choice([1_000, 60_000, 7_200_000]), True)][:rng.randint(1, 3)]
        names = [(f"l{i}", f"r{i}", f"s{i}") for i in range(len(rows))]
        plan = core.RatePlan(rows, [(n, [i]) for i, n in enumerate(names)])
        tokens = rng.choice([0, 1, 7, 40, 120, 500])
        ops = [Op(RATE, k, lim, win, tokens if tok else 1) for k, lim, win, tok in rows]
        grant, want = fast.rates.admit(plan, tokens, now), ref.apply_now(ops, now)
        got = None if grant is None else grant.rate_headers
        if want.allowed:
            assert got == [pair for n, op, r in zip(names, ops, want.results, strict=True)
                           for pair in ((n[0], str(op.limit)), (n[1], str(r.remaining)),
                                        (n[2], duration(r.reset_ms)))]
        else:
            assert got is None
            # The service then decides again on the general path (and explains the 429).
            assert fast.apply_now(ops, now) == want
            denied += 1
        assert fast.rates.to_dict() == ref.rates.to_dict()
        if grant is not None:
            used = rng.randint(0, 260)
            fast.rates.settle(grant, used, now)
            fast.rates.settle(grant, used, now)  # once only
            assert grant.settled
            ref.adjust([Op(RATE, k, lim, win, used - tokens, ADJUST) for k, lim, win, tok in rows
                        if tok], now)
            assert fast.rates.to_dict() == ref.rates.to_dict()
    assert 500 < denied < 4500  # both branches were exercised


async def test_plan_change_keeps_what_was_used() -> None:
    limiter = MemoryLimiter()
    for _ in range(3):
        assert (await limiter.apply([Op(RATE, "k", 3, 60_000)], NOW0)).allowed
    assert not (await limiter.apply([Op(RATE, "k", 3, 60_000)], NOW0)).allowed
    # Upgrading keeps what was used (3), not the time debt: 3 of 6 left, this one included.
    raised = await limiter.apply([Op(RATE, "k", 6, 60_000)], NOW0)
    assert raised.allowed and raised.results[0].remaining == 2
    lowered = await limiter.apply([Op(RATE, "k", 2, 60_000)], NOW0)  # 4 used of 2: none left
    assert not lowered.allowed and lowered.results[0].retry_ms == 90_000  # 3 cells at 30 s


@pytest.mark.parametrize("kind", ["memory", *REDIS_KINDS])
async def test_adjust_is_applied_first_and_kept_when_denied(kind: str) -> None:
    """ADJUST (settle's deferred delta) is written before the checks after it read the
    key, and survives a denied batch: the next admit carries it whatever its own fate."""
    limiter, client = await _limiter(kind)
    tag = "{t" + secrets.token_hex(6) + "}"
    tpm, quota = f"wl:{tag}:tpm", f"wl:{tag}:q:usd:p"
    end = NOW0 + 3_600_000
    assert (await limiter.apply([Op(RATE, tpm, 100, 60_000, 40)], NOW0)).allowed
    # +50 tokens reconciled, then a 20-token check: 40 + 50 + 20 = 110 > 100, denied...
    out = await limiter.apply([Op(RATE, tpm, 100, 60_000, 50, ADJUST),
                               Op(QUOTA, quota, 10, end, 7, ADJUST),
                               Op(RATE, tpm, 100, 60_000, 20)], NOW0)
    assert (out.allowed, out.denied, out.results[2].remaining) == (False, 2, 10)
    # ...yet both deltas stay written: 90 tokens used, 7 of the quota spent.
    peek = await limiter.apply([Op(RATE, tpm, 100, 60_000, 10, PEEK),
                                Op(QUOTA, quota, 10, end, 0, FORCE)], NOW0)
    assert peek.allowed and [r.remaining for r in peek.results] == [0, 3]
    # A refund (negative ADJUST) is seen by the check in the same batch.
    out = await limiter.apply([Op(RATE, tpm, 100, 60_000, -60, ADJUST),
                               Op(RATE, tpm, 100, 60_000, 65)], NOW0)
    assert out.allowed and out.results[1].remaining == 5
    if client is not None:
        await close_client(client)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_grant_and_refund_match_python(kind: str) -> None:
    """GRANT reports the charge count; REFUND gives back only what is provably still in
    the bucket, nothing for a stale or foreign grant. Random sequences, Lua == Python."""
    client = client_of(kind)
    red = RedisLimiter(client)
    rng = random.Random(3)
    for _ in range(40):
        mem = MemoryLimiter()  # per sequence: its sweep never runs (the Redis keys outlive it)
        key = "wl:{g" + secrets.token_hex(6) + "}:rpm"
        now = NOW0
        grants: list[tuple[int, int, int, int, int]] = []  # (now, C, D before, gen, R)
        for _ in range(30):
            now += rng.choice([0, 0, 7, 60, 250, 900, 3000])
            limit = rng.choice([60, 600, 600, 600])
            mode = rng.choice([GRANT, GRANT, CHECK, ADJUST, FORCE, REFUND, REFUND, REFUND, GEN])
            member = ""
            if mode == REFUND:
                if not grants:
                    continue
                g_now, c_g, before, gen, r_g = rng.choice(grants)
                member = (f"{g_now}:{c_g + rng.choice([0, 0, 0, 1])}:{before}:"
                          f"{gen + rng.choice([0, 0, 0, 1])}:{r_g}")
                cost = -rng.randint(1, 20)
            else:
                cost = rng.choice([rng.randint(-5, 30), 20_000]) if mode in (ADJUST, FORCE) \
                    else rng.randint(0, 20)  # 20,000: past the 16-window debt cap
            op = Op(RATE, key, limit, 60_000, cost, mode, member)
            batch = [op, Op(RATE, key, limit, 60_000, 0, GEN)]
            got, want = await red.apply(batch, now), await mem.apply(batch, now)
            assert got == want, (op, got, want)
            if mode == GRANT and want.allowed:
                res, gen_res = want.results
                grants.append((now, res.retry_ms, res.reset_ms * limit - cost * 60_000,
                               gen_res.retry_ms, gen_res.reset_ms))
    await close_client(client)


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_no_refund_across_a_restarted_count(kind: str) -> None:
    """An earlier version's worker rewrites a bucket without its count (a rolling upgrade),
    or Redis evicts the key: the count restarts in a new generation, and a REFUND of a grant
    from before gives nothing back. The same sequence without the rewrite refunds."""
    client = client_of(kind)
    red = RedisLimiter(client)
    admin = redis_client()
    for rewrite in (False, True):
        key = "wl:{r" + secrets.token_hex(6) + "}:rpm"
        out = await red.apply([Op(RATE, key, 600, 60_000, 50, GRANT),
                               Op(RATE, key, 600, 60_000, 0, GEN)], NOW0)
        res, gen = out.results
        member = (f"{NOW0}:{res.retry_ms}:{res.reset_ms * 600 - 50 * 60_000}:{gen.retry_ms}:"
                  f"{gen.reset_ms}")
        if rewrite:
            raw = await admin.get(key)
            await admin.set(key, b":".join(raw.split(b":")[:3]), px=10_000)
        await red.apply([Op(RATE, key, 600, 60_000, 60)], NOW0 + 10)  # another worker
        back = await red.apply([Op(RATE, key, 600, 60_000, -40, REFUND, member)], NOW0 + 20)
        assert back.results[0].retry_ms == (0 if rewrite else 40), rewrite
    await admin.aclose()
    await close_client(client)


def test_prefetch_refunds_never_leave_the_bucket_looser_than_exact() -> None:
    """Random traces of grants (each using part of its block), other workers' charges,
    reconciliation adjustments and refunds in any order, replayed twice: as they happen,
    and exactly (each grant charged only its used units, nothing refunded). The bucket
    is never below the exact one: a refund never gives back capacity someone else used."""
    rng = random.Random(17)
    key, limit, win = "wl:{x}:rpm", 600, 60_000

    def level(mem: MemoryLimiter, now: int) -> int:
        state = mem.rates.get(key)
        return (state[0] - now) * state[2] + state[1] if state and state[0] >= now else 0

    for _ in range(1500):
        real, exact = MemoryLimiter(), MemoryLimiter()
        now, out = NOW0, []  # out: (member, unused) of grants not yet returned
        for _ in range(25):
            now += rng.choice([0, 1, 20, 100, 400, 1500])
            event = rng.random()
            if event < 0.35:
                k = rng.randint(1, 64)
                got = real.apply_now([Op(RATE, key, limit, win, k, GRANT),
                                      Op(RATE, key, limit, win, 0, GEN)], now)
                if got.allowed:
                    res, gen = got.results
                    used = rng.randint(0, k)
                    exact.apply_now([Op(RATE, key, limit, win, used, FORCE)], now)
                    out.append((f"{now}:{res.retry_ms}:{res.reset_ms * limit - k * win}:"
                                f"{gen.retry_ms}:{gen.reset_ms}", k - used))
            elif event < 0.6:
                c = rng.randint(0, 40)
                if real.apply_now([Op(RATE, key, limit, win, c)], now).allowed:
                    exact.apply_now([Op(RATE, key, limit, win, c, FORCE)], now)
            elif event < 0.75:
                a = rng.choice([rng.randint(-20, 20), 20_000])
                for mem in (real, exact):
                    mem.apply_now([Op(RATE, key, limit, win, a, ADJUST)], now)
            elif out:
                member, unused = out.pop(rng.randrange(len(out)))
                if unused:
                    real.apply_now([Op(RATE, key, limit, win, -unused, REFUND, member)], now)
            assert level(real, now) >= level(exact, now)
