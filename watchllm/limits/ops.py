"""The one atomic limits operation: a batch of checks, evaluated all-or-nothing.

A request's checks (per-key and per-project rates, concurrency, quotas) go to the
`Counters` seam as one batch. If any CHECK/PEEK op fails, nothing is written and the
index of the first failing op is reported; otherwise every op's write is applied. This
module is the reference semantics: `MemoryLimiter` below runs it in-process, and the Lua
script in `watchllm/limits/redis.py` is a line-for-line port of `rate`, `conc`, `_quota`.

RATE (GCRA, the generic cell rate algorithm of ITU-T I.371, token-bucket equivalent)
    `limit` units per `window_ms`, burst capacity `limit`. State: the theoretical arrival
    time TAT. A request of cost n at time t is admitted iff max(TAT, t) + n*W/L - t <= W,
    then TAT := max(TAT, t) + n*W/L. TAT is kept as whole ms plus a remainder in units of
    1/L ms, so every comparison is exact integer arithmetic (no float drift, in Lua too):
    D = (TAT - t) * L is an integer, one request adds W to it, capacity is W * L.
ADJUST is FORCE applied at once and unconditionally: written before the ops after it are
    evaluated (they see it) and kept even when the batch is denied. It carries the deltas
    that settle defers (TPM reconciliation, token quota, spend) into the next admit's batch.
GRANT is CHECK that also reports, in `retry_ms`, the bucket's charge count C after it: the
    units ever charged to it (CHECK, GRANT, and what FORCE/ADJUST added after the clamp),
    kept while the bucket lives. A prefetch (limits/prefetch.py) is taken with GRANT.
GEN   reads when the bucket's count C started (its generation: the time of the first write
    that kept a count), or `now` if it has none yet, in `retry_ms`; and R, the units ever
    refunded to it, in `reset_ms`. Never fails, writes nothing. A count can restart (the
    key evicted, or rewritten without a count by an earlier version): a REFUND of a grant
    from another generation gives nothing back.
REFUND gives back, at once, at most `-cost` units of a GRANT that were not used, and only
    what is provably still in the bucket: GCRA drains first in, first out, so the grant's
    block is still in the bucket by at least D - (charged after it) - (what was ahead of it
    and has not drained, less what was refunded since: refunds come out of other blocks).
    `member` is "<grant's now>:<C after it>:<D before it, an upper bound>:<generation>:<R
    at the grant>". Refunding more would hand out capacity the drain already freed (over
    the limit); REFUND never does, and gives nothing once HOLD_MS - 1 s have passed.
    `retry_ms` reports the units given back.
CONC  at most `limit` leases held; a lease expires after `window_ms` (a crashed worker
    cannot leak a slot for longer). RELEASE drops the lease named `member`.
QUOTA a counter for one period: CHECK admits iff value + cost <= limit; `window_ms` is the
    absolute end of the period (epoch ms), when the key expires.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watchllm import core

RATE, CONC, QUOTA = 0, 1, 2
CHECK, PEEK, FORCE, RELEASE, ADJUST, GRANT, REFUND, GEN = 0, 1, 2, 3, 4, 5, 6, 7
NEVER = -1  # retry_ms when waiting cannot help (cost above the whole limit)
# Exact integer arithmetic in Lua needs every intermediate below 2**53.
MAX_CAPACITY = 1 << 48  # window_ms * limit
MAX_DEBT = 16  # FORCE may push a bucket at most this many windows into debt
HOLD_MS = 5000  # a rate bucket's state outlives its last write by this (Lua: HOLD)


# Plain slotted dataclasses: several are built per request, and a frozen dataclass's
# or NamedTuple's constructor costs several times more. Treat them as immutable.
@dataclass(slots=True)
class Op:
    kind: int  # RATE | CONC | QUOTA
    key: str
    limit: int
    window_ms: int  # RATE: window; CONC: lease length; QUOTA: absolute period end (epoch ms)
    cost: int = 1  # may be negative with FORCE (reconciliation, refunds)
    mode: int = CHECK  # CHECK | PEEK (check, write nothing) | FORCE (write, no check) | RELEASE
    #                    | ADJUST (FORCE, written at once, even when the batch is denied)
    member: str = ""  # CONC: the lease id


@dataclass(slots=True)
class OpResult:
    remaining: int  # after this request when admitted, else before it
    reset_ms: int  # RATE: until the bucket is full again; QUOTA: until the period ends
    retry_ms: int  # 0 when admitted; NEVER when waiting cannot help


@dataclass(slots=True)
class Outcome:
    allowed: bool
    denied: int  # index of the first failing op, -1 when allowed
    now_ms: int  # the clock the decision used (Redis TIME on Redis)
    results: tuple[OpResult, ...]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# Each evaluator returns (allowed, result, new_state) for one op; new_state is written
# only when the whole batch is allowed. They are pure so the Lua port can be checked
# against them on random traces (tests/limits/test_exactness.py).

RateState = tuple[int, int, int]  # (tat_ms, remainder in 1/L0 ms, L0)


def _level(state: RateState | None, now: int) -> int:
    """D, the bucket's level at `now` in units of its stored limit (0 once drained). The
    hot CHECK path in `apply_now` and `adjust` inline this."""
    return (state[0] - now) * state[2] + state[1] if state is not None and state[0] >= now else 0


def rate(state: RateState | None, op: Op, now: int) -> tuple[bool, OpResult, RateState | None]:
    limit, win, n = op.limit, op.window_ms, op.cost
    # In units of the stored limit L0, d counts consumed cells * W; kept as-is when the
    # plan changes the limit, so "3 of 6 used" becomes "3 of 60 used" (not a time debt).
    d = _level(state, now)
    cap = win * limit
    if op.mode == REFUND:
        raise ValueError("REFUND needs the charge count: MemoryLimiter.apply_now")
    if op.mode == FORCE or op.mode == ADJUST:
        dn = min(max(d + n * win, 0), cap * MAX_DEBT)
        return True, OpResult((cap - min(dn, cap)) // win, _ceil_div(dn, limit), 0), (
            now + dn // limit, dn % limit, limit)
    dn = d + n * win
    if dn <= cap:
        new = (now + dn // limit, dn % limit, limit) if op.mode in (CHECK, GRANT) else None
        return True, OpResult((cap - dn) // win, _ceil_div(dn, limit), 0), new
    retry = NEVER if n > limit else _ceil_div(dn - cap, limit)
    return False, OpResult(max(cap - d, 0) // win, _ceil_div(d, limit), retry), None


ConcState = dict[str, int]  # lease id -> expiry (epoch ms)


def conc(state: ConcState | None, op: Op, now: int) -> tuple[bool, OpResult, ConcState | None]:
    leases = {m: exp for m, exp in (state or {}).items() if exp > now}
    if op.mode == RELEASE:
        leases.pop(op.member, None)
        return True, OpResult(op.limit - len(leases), 0, 0), leases
    if len(leases) < op.limit:
        if op.mode != CHECK:
            return True, OpResult(op.limit - len(leases), 0, 0), leases
        remaining = op.limit - len(leases) - 1  # counted before the insert, as the Lua does
        leases[op.member] = now + op.window_ms
        return True, OpResult(remaining, 0, 0), leases
    return False, OpResult(0, 0, NEVER if op.limit <= 0 else 1000), None


def refund(state: RateState | None, counts: tuple[int, int | None, int], op: Op, now: int
           ) -> tuple[OpResult, RateState | None]:
    """REFUND (see the module's docstring); `counts` is the bucket's (C, generation, R).
    The new state is None when nothing is given back (nothing written)."""
    charged, gen, refunded = counts
    limit, win = op.limit, op.window_ms
    d, l0 = _level(state, now), state[2] if state is not None else 0
    g_now, c_g, before, gen_g, r_g = (int(x) for x in op.member.split(":"))
    r = 0
    if gen == gen_g and l0 == limit and now - g_now <= HOLD_MS - 1000 and charged >= c_g \
            and refunded >= r_g:
        bound = d - (charged - c_g) * win \
            - max(before - (now - g_now) * limit - (refunded - r_g) * win, 0)
        if bound > 0:
            r = max(min(-op.cost, bound // win), 0)
    dn = d - r * win
    cap = win * limit
    return (OpResult((cap - min(dn, cap)) // win, _ceil_div(dn, limit), r),
            (now + dn // limit, dn % limit, limit) if r else None)


def quota(state: int | None, op: Op, now: int) -> tuple[bool, OpResult, int | None]:
    value = state or 0
    reset = max(op.window_ms - now, 0)
    if op.mode == FORCE or op.mode == ADJUST:
        value = max(value + op.cost, 0)
        return True, OpResult(max(op.limit - value, 0), reset, 0), value
    if value + op.cost <= op.limit:
        if op.mode != CHECK:
            return True, OpResult(op.limit - value, reset, 0), None
        return True, OpResult(op.limit - value - op.cost, reset, 0), value + op.cost
    retry = NEVER if op.cost > op.limit else reset
    return False, OpResult(max(op.limit - value, 0), reset, retry), None


class MemoryLimiter:
    """The batch semantics on dicts: exact within one process (the embedded runtime)."""

    def __init__(self) -> None:
        # Every rate bucket, in Rust (the twin on Pyodide): the in-process fast path
        # (`rates.admit`, `rates.settle`) works on it without a Python object per bucket.
        self.rates = core.RateTable()
        self._conc: dict[str, ConcState] = {}
        self._quota: dict[str, tuple[int, int]] = {}  # key -> (value, expires at ms)
        # key -> (charge count C, expires at ms, generation, refunded R), kept by `apply_now`
        # only: the in-process fast path (`rates.admit`, `adjust`) never takes prefetches. Read even
        # past its expiry until `_sweep` drops it (longer than Redis keeps it: stricter).
        self._charged: dict[str, tuple[int, int, int, int]] = {}
        self._sweep_at = 0

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        return self.apply_now(ops, now_ms)

    def apply_now(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        """`apply` without the coroutine, for callers in this process (LimitsService)."""
        # Synchronous: the batch is atomic with respect to every other coroutine.
        now = int(time.time() * 1000) if now_ms is None else now_ms
        results: list[OpResult] = []
        writes: list[tuple[Any, str, object]] = []  # (dict or RateTable, key, state)
        rates = self.rates
        denied = -1
        for i, op in enumerate(ops):
            kind, mode = op.kind, op.mode
            if kind == RATE and mode == CHECK:
                # rate()'s CHECK path inlined (the hot path: every request's rpm and tpm);
                # the Lua port is checked against this on random batches.
                limit, win = op.limit, op.window_ms
                state = rates.get(op.key)
                d = (state[0] - now) * state[2] + state[1] \
                    if state is not None and state[0] >= now else 0
                dn = d + op.cost * win
                cap = win * limit
                if dn <= cap:
                    results.append(OpResult((cap - dn) // win, -(-dn // limit), 0))
                    writes.append((rates, op.key, (now + dn // limit, dn % limit, limit)))
                    c, gen, rf = self._count(op.key, now)
                    writes.append((self._charged, op.key, (
                        c + op.cost, now - (-dn // limit) + 1 + HOLD_MS, gen, rf)))
                    continue
            new: object
            if kind == RATE and mode == REFUND:  # written at once, like ADJUST
                held = self._charged.get(op.key)
                c, gen, rf = self._count(op.key, now)
                res, refunded = refund(rates.get(op.key), (c, held and held[2], rf), op, now)
                if refunded is not None:
                    rates[op.key] = refunded
                    self._charged[op.key] = (c, now + res.reset_ms + 1 + HOLD_MS, gen,
                                             rf + res.retry_ms)
                results.append(res)
                continue
            if kind == RATE and mode == GEN:
                d = _level(rates.get(op.key), now)
                cap = op.window_ms * op.limit
                _, gen, rf = self._count(op.key, now)
                results.append(OpResult((cap - min(d, cap)) // op.window_ms, rf, gen))
                continue
            if kind == RATE:
                c, gen, rf = self._count(op.key, now)
                state = rates.get(op.key)
                ok, res, new = rate(state, op, now)
                store: Any = rates
                if ok and new is not None:
                    if mode in (FORCE, ADJUST):  # what was added, after the clamp
                        d, dn = _level(state, now), _level(new, now)
                        c += _ceil_div(max(dn - d, 0), op.window_ms)
                        if d + op.cost * op.window_ms > op.window_ms * op.limit * MAX_DEBT:
                            # the debt cap cut it: no grant from before may be refunded
                            c += MAX_DEBT * op.limit
                    else:
                        c += op.cost
                    if mode == GRANT:
                        res.retry_ms = c
                    charge = (c, now + res.reset_ms + 1 + HOLD_MS, gen, rf)
                    if mode == ADJUST:
                        self._charged[op.key] = charge
                    else:
                        writes.append((self._charged, op.key, charge))
            elif kind == CONC:
                ok, res, new = conc(self._conc.get(op.key), op, now)
                store = self._conc
            else:
                q = self._quota.get(op.key)
                ok, res, new = quota(q[0] if q and q[1] > now else None, op, now)
                store = self._quota
                if new is not None:  # kept a minute past the period's end, like the Redis key
                    new = (new, op.window_ms + 60_000)
            results.append(res)
            if not ok:
                if denied < 0:
                    denied = i
            elif new is not None:
                if mode == ADJUST:
                    store[op.key] = new  # at once: the ops after it see it
                else:
                    writes.append((store, op.key, new))
        if denied < 0:
            for store, key, new in writes:
                store[key] = new
        self.rates.sweep_due(now)  # on its own schedule: `rates.admit` sweeps it too
        if now >= self._sweep_at:
            self._sweep(now)
        return Outcome(denied < 0, denied, now, tuple(results))

    def _count(self, key: str, now: int) -> tuple[int, int, int]:
        """(C, generation, R) of a bucket; a bucket without a count starts one now."""
        held = self._charged.get(key)
        return (held[0], held[2], held[3]) if held is not None else (0, now, 0)

    def adjust(self, ops: Sequence[Op], now_ms: int | None = None) -> None:
        """Apply ADJUST (and RELEASE) ops whose results nobody reads: the in-process settle.
        The same writes as `apply_now` (tests/limits/test_gcra.py), rate()'s ADJUST inlined."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        rates = self.rates
        rest = []
        for op in ops:
            if op.kind == RATE and op.mode == ADJUST:
                limit, win, state = op.limit, op.window_ms, rates.get(op.key)
                d = (state[0] - now) * state[2] + state[1] \
                    if state is not None and state[0] >= now else 0
                dn = min(max(d + op.cost * win, 0), win * limit * MAX_DEBT)
                rates[op.key] = (now + dn // limit, dn % limit, limit)
            else:
                rest.append(op)
        if rest:
            self.apply_now(rest, now)

    def _sweep(self, now: int) -> None:
        """Drop state that no longer limits anything (charge counts, leases, past periods;
        the rate table sweeps its own buckets)."""
        self._sweep_at = now + 60_000
        self._charged = {k: v for k, v in self._charged.items() if v[1] > now}
        self._conc = {k: v for k, v in self._conc.items() if any(e > now for e in v.values())}
        self._quota = {k: v for k, v in self._quota.items() if v[1] > now}

    def __len__(self) -> int:
        return len(self.rates) + len(self._conc) + len(self._quota)
