"""Twin of `rust_core/src/py/rates.rs`: the in-process rate limiter's states.

`RateTable` holds every GCRA bucket of the process (key -> (tat_ms, remainder, L0));
`admit` checks each of a plan's rate ops, all-or-nothing, and returns a `RateGrant`
with the `x-ratelimit-*` headers of the result; `settle` adds the grant's token delta
to the plan's token ops. The same arithmetic as `watchllm.limits.ops.rate()`
(tests/limits/test_gcra.py, tests/core/test_rates.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._errors import CoreError

_MAX_DEBT = 16
_SWEEP_MS = 60_000
_I64 = 1 << 63
Headers = list[tuple[str, str]]
State = tuple[int, int, int]


class RatePlan:
    """A caller's rate ops: rows (key, limit, window_ms, costs tokens) and header groups
    ((limit, remaining, reset) names, the row indices they report the tightest of)."""

    __slots__ = ("groups", "rows")

    def __init__(self, rows: list[tuple[str, int, int, bool]],
                 groups: list[tuple[tuple[str, str, str], list[int]]]) -> None:
        if any(limit <= 0 or window <= 0 for _, limit, window, _ in rows):
            raise CoreError("rate limit and window must be positive")
        if any(not idx or any(not 0 <= i < len(rows) for i in idx) for _, idx in groups):
            raise CoreError("header group names no row")
        self.rows = [(k, lim, win, bool(tok), str(lim)) for k, lim, win, tok in rows]
        self.groups = [(names, list(idx)) for names, idx in groups]


def _duration_text(ms: int) -> str:
    return f"{ms}ms" if ms < 1000 else duration(ms)


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _int(value: int) -> int:
    if not -_I64 <= value < _I64:
        raise OverflowError("out of range for a 64-bit integer")
    return value


class RateGrant:
    """A request admitted by `RateTable.admit` (owner: its plan) or `HeldRates.take`
    (owner: what the prefetch was given); settled once."""

    __slots__ = ("estimated_tokens", "owner", "rate_headers", "settled")

    def __init__(self, rate_headers: Headers, estimated_tokens: int, owner: object) -> None:
        self.rate_headers = rate_headers
        self.estimated_tokens = estimated_tokens
        self.owner = owner
        self.settled = False

    def mark_settled(self) -> bool:
        first = not self.settled
        self.settled = True
        return first


# A header group of a held grant: the limit's header as sent, the names of the two that
# change, the tightest row's remaining and reset (ms) after the grant, whether it counts
# tokens, its ms per unit.
HeldGroup = tuple[tuple[str, str], str, str, int, int, bool, float]


class HeldRates:
    """What is left of one prefetched grant (`rust_core/src/py/held.rs`)."""

    __slots__ = ("_groups", "_half_s", "_owner", "at", "req", "size", "tok", "tokens",
                 "until")

    def __init__(self, size: int, tokens: int, at: float, ttl_s: float,
                 groups: list[HeldGroup], owner: object) -> None:
        size, tokens = _int(size), _int(tokens)
        if size < 0 or tokens < 0 or not ttl_s >= 0:
            raise CoreError("a grant's size, tokens and ttl are non-negative")
        self.req = self.size = size
        self.tok = self.tokens = tokens
        self.at, self.until, self._half_s = float(at), at + ttl_s, ttl_s / 2
        self._groups = [(lim, rn, sn, _int(base), float(_int(reset)), bool(tok), float(mpu))
                        for lim, rn, sn, base, reset, tok, mpu in groups]
        self._owner = owner

    def take(self, tokens: int, now: float) -> RateGrant | None:
        tokens = _int(tokens)
        if now >= self.until or self.req < 1 or self.tok < tokens or tokens < 0:
            return None
        req = self.req = self.req - 1
        tok = self.tok = self.tok - tokens
        elapsed = (now - self.at) * 1000
        headers: Headers = []
        for limit, remaining, reset, base, base_reset, in_tokens, ms_per_unit in self._groups:
            left = tok if in_tokens else req
            ms = int(base_reset - left * ms_per_unit - elapsed)
            headers += (limit, (remaining, str(base + left)),
                        (reset, _duration_text(ms if ms > 0 else 0)))
        return RateGrant(headers, tokens, self._owner)

    def low(self, now: float) -> bool:
        return self.req * 2 < self.size or self.tok * 2 < self.tokens \
            or now + self._half_s > self.until

    def drain(self) -> tuple[int, int]:
        left = (self.req, self.tok)
        self.req = self.tok = 0
        return left


class HeldSlot:
    """One caller's prefetch as the request path sees it (`rust_core/src/py/held.rs`)."""

    __slots__ = ("_on_low", "_on_miss", "_on_pending", "_watched", "busy", "held",
                 "pending")

    def __init__(self, on_miss: Callable[[float], object], on_low: Callable[[float], object],
                 on_pending: Callable[[], object]) -> None:
        self.held: HeldRates | None = None
        self.busy = False
        self.pending = 0
        self._watched = False
        self._on_miss, self._on_low, self._on_pending = on_miss, on_low, on_pending

    def take(self, tokens: int, now: float | None = None) -> RateGrant | None:
        if now is None:
            now = time.monotonic()
        held = self.held
        got = None if held is None else held.take(tokens, now)
        if got is None:
            self._on_miss(now)
            return None
        if not self.busy and held is not None and held.low(now):
            self._on_low(now)
        return got

    def settle(self, grant: RateGrant, real_tokens: int) -> None:
        if not grant.mark_settled():
            return
        delta = _sat((real_tokens if real_tokens > 0 else 0) - grant.estimated_tokens)
        if delta:
            self.pending = _sat(self.pending + delta)
            if not self._watched:
                self._watched = True
                self._on_pending()

    def drain_pending(self) -> int:
        self._watched = False
        pending, self.pending = self.pending, 0
        return pending


def _sat(value: int) -> int:
    """Saturated to a 64-bit integer, as Rust's saturating arithmetic."""
    return -_I64 if value < -_I64 else _I64 - 1 if value >= _I64 else value


class RateTable:
    """Every rate bucket of the process (`MemoryLimiter._rate`)."""

    __slots__ = ("_states", "_sweep_at")

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._sweep_at = 0

    def _level(self, key: str, now: int) -> int:
        state = self._states.get(key)
        if state is None:
            return 0
        tat, rem, l0 = state
        return (tat - now) * l0 + rem if tat >= now else 0

    def _put(self, key: str, now: int, dn: int, limit: int) -> None:
        state = (now + dn // limit, dn % limit, limit)
        if any(not -_I64 <= v < _I64 for v in state):
            raise CoreError("rate state overflows")
        self._states[key] = state

    def _add_tokens(self, plan: RatePlan, delta: int, now: int) -> None:
        for key, limit, win, per_token, _ in plan.rows:
            if per_token:
                dn = min(max(self._level(key, now) + delta * win, 0), win * limit * _MAX_DEBT)
                self._put(key, now, dn, limit)

    def admit(self, plan: RatePlan, tokens: int, now_ms: int | None = None) -> RateGrant | None:
        tokens = _int(tokens)
        now = time.time_ns() // 1_000_000 if now_ms is None else _int(now_ms)
        new = []
        for key, limit, win, per_token, _ in plan.rows:
            dn = self._level(key, now) + (tokens if per_token else 1) * win
            cap = win * limit
            if dn > cap:
                return None
            new.append(((cap - dn) // win, -(-dn // limit), dn))
        for (key, limit, _, _, _), (_, _, dn) in zip(plan.rows, new, strict=True):
            self._put(key, now, dn, limit)
        self.sweep_due(now)
        headers: Headers = []
        for names, idx in plan.groups:
            i = idx[0]
            for j in idx[1:]:
                if new[j][0] < new[i][0]:
                    i = j
            remaining, reset, _ = new[i]
            headers += ((names[0], plan.rows[i][4]), (names[1], str(remaining)),
                        (names[2], _duration_text(reset)))
        return RateGrant(headers, tokens, plan)

    def settle(self, grant: RateGrant, real_tokens: int, now_ms: int | None = None) -> None:
        real_tokens = _int(real_tokens)
        plan = grant.owner
        if not isinstance(plan, RatePlan):
            raise TypeError("a grant of a prefetch is not settled by a RateTable")
        if not grant.mark_settled():
            return
        delta = max(real_tokens, 0) - grant.estimated_tokens
        if delta:
            now = time.time_ns() // 1_000_000 if now_ms is None else _int(now_ms)
            self._add_tokens(plan, delta, now)

    def adjust(self, plan: RatePlan, delta: int, now_ms: int) -> None:
        self._add_tokens(plan, _int(delta), _int(now_ms))

    def get(self, key: str) -> State | None:
        return self._states.get(key)

    def __setitem__(self, key: str, state: State) -> None:
        tat, rem, l0 = (_int(v) for v in state)
        if l0 <= 0 or rem < 0:
            raise CoreError("a rate state is (tat_ms, remainder >= 0, L0 > 0)")
        self._states[key] = (tat, rem, l0)

    def __len__(self) -> int:
        return len(self._states)

    def sweep(self, now_ms: int) -> None:
        self._sweep_at = now_ms + _SWEEP_MS
        self._states = {k: v for k, v in self._states.items() if v[0] >= now_ms}

    def sweep_due(self, now_ms: int) -> None:
        if now_ms >= self._sweep_at:
            self.sweep(now_ms)

    def to_dict(self) -> dict[str, State]:
        return dict(self._states)
