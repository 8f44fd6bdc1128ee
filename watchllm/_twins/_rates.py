"""Twin of `rust_core/src/py/rates.rs`: the in-process admission of rates-only callers.

GCRA CHECK of each of a plan's rate ops on the limiter's dict of states (key ->
(tat_ms, remainder, L0)), all-or-nothing, and the `x-ratelimit-*` headers of the result;
`adjust_rates` adds a token delta to the plan's token ops. The same arithmetic as
`watchllm.limits.ops.rate()` (tests/limits/test_gcra.py, tests/core/test_rates.py).
"""

from __future__ import annotations

from ._errors import CoreError

_MAX_DEBT = 16
_I64 = 1 << 63
Headers = list[tuple[bytes, bytes]]


class RatePlan:
    """A caller's rate ops: rows (key, limit, window_ms, costs tokens) and header groups
    ((limit, remaining, reset) names, the row indices they report the tightest of)."""

    __slots__ = ("groups", "rows")

    def __init__(self, rows: list[tuple[str, int, int, bool]],
                 groups: list[tuple[tuple[bytes, bytes, bytes], list[int]]]) -> None:
        if any(limit <= 0 or window <= 0 for _, limit, window, _ in rows):
            raise CoreError("rate limit and window must be positive")
        if any(not idx or any(not 0 <= i < len(rows) for i in idx) for _, idx in groups):
            raise CoreError("header group names no row")
        self.rows = [(k, lim, win, bool(tok), b"%d" % lim) for k, lim, win, tok in rows]
        self.groups = [(names, list(idx)) for names, idx in groups]


def _level(rates: dict[str, tuple[int, int, int]], key: str, now: int) -> int:
    state = rates.get(key)
    if state is None:
        return 0
    tat, rem, l0 = state  # a malformed state is an error, as in Rust
    return (tat - now) * l0 + rem if tat >= now else 0


def _store(rates: dict[str, tuple[int, int, int]], key: str, now: int, dn: int,
           limit: int) -> None:
    state = (now + dn // limit, dn % limit, limit)
    if any(not -_I64 <= v < _I64 for v in state):
        raise CoreError("rate state overflows")
    rates[key] = state


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def admit_rates(rates: dict[str, tuple[int, int, int]], plan: RatePlan, tokens: int,
                now_ms: int) -> Headers | None:
    new = []
    for key, limit, win, per_token, _ in plan.rows:
        dn = _level(rates, key, now_ms) + (tokens if per_token else 1) * win
        cap = win * limit
        if dn > cap:
            return None
        new.append(((cap - dn) // win, -(-dn // limit), dn))
    for (key, limit, _, _, _), (_, _, dn) in zip(plan.rows, new, strict=True):
        _store(rates, key, now_ms, dn, limit)
    headers: Headers = []
    for names, idx in plan.groups:
        i = idx[0]
        for j in idx[1:]:
            if new[j][0] < new[i][0]:
                i = j
        remaining, reset, _ = new[i]
        headers += ((names[0], plan.rows[i][4]), (names[1], b"%d" % remaining),
                    (names[2], duration(reset).encode()))
    return headers


def adjust_rates(rates: dict[str, tuple[int, int, int]], plan: RatePlan, delta: int,
                 now_ms: int) -> None:
    for key, limit, win, per_token, _ in plan.rows:
        if per_token:
            dn = min(max(_level(rates, key, now_ms) + delta * win, 0), win * limit * _MAX_DEBT)
            _store(rates, key, now_ms, dn, limit)
