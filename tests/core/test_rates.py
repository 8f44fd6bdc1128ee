"""`admit_rates` / `adjust_rates`: the Rust extension and its twin decide, write and
format alike (random plans, states, clocks and deltas; stale and re-planned buckets;
resets from milliseconds to hours), and bad plans or states are refused alike."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

NOW0 = 1_790_000_000_000
KEYS = ["a", "b", "c"]

rows = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(1, 10**9),
              st.sampled_from([1, 1_000, 60_000, 3_600_000, 86_400_000]), st.booleans()),
    min_size=1, max_size=3, unique_by=lambda r: r[0],
).filter(lambda rs: all(r[1] * r[2] <= 1 << 48 for r in rs))
steps = st.lists(st.tuples(st.sampled_from([0, 0, 1, 999, 60_000, 5_000_000]),
                           st.integers(0, 10**6), st.integers(-10**6, 10**6)), max_size=25)


def plan(mod: ModuleType, rs: list[tuple[str, int, int, bool]]) -> Any:
    names = [(b"l" + k.encode(), b"r" + k.encode(), b"s" + k.encode()) for k, *_ in rs]
    groups = [(names[0], list(range(len(rs))))] + [(n, [i]) for i, n in enumerate(names)]
    return mod.RatePlan(rs, groups)


@settings(max_examples=300, deadline=None)
@given(rs=rows, trace=steps, tokens_first=st.integers(0, 10))
def test_twin_equals_rust(rust: ModuleType, twin: ModuleType, rs: Any, trace: Any,
                          tokens_first: int) -> None:
    plans = {m: plan(m, rs) for m in (rust, twin)}
    states: dict[ModuleType, dict[str, tuple[int, int, int]]] = {rust: {}, twin: {}}
    now = NOW0
    for dt, tokens, delta in [(0, tokens_first, 0), *trace]:
        now += dt
        answers = [m.admit_rates(states[m], plans[m], tokens, now) for m in (rust, twin)]
        assert answers[0] == answers[1]
        assert states[rust] == states[twin]
        if answers[0] is not None:
            for m in (rust, twin):
                m.adjust_rates(states[m], plans[m], delta, now)
            assert states[rust] == states[twin]


def test_a_stale_or_replanned_bucket(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("a", 3, 60_000, False)])
        # used 2 of 3 under an old limit of 6 per minute (L0 = 6): the level is kept
        rates = {"a": (NOW0 + 20_000, 0, 6)}
        headers = mod.admit_rates(rates, p, 0, NOW0)
        assert headers[:3] == [(b"la", b"3"), (b"ra", b"0"), (b"sa", b"1m0s")]
        assert mod.admit_rates(rates, p, 0, NOW0) is None  # full: nothing written
        assert rates["a"] == (NOW0 + 60_000, 0, 3)
        stale = {"a": (NOW0 - 1, 0, 3)}
        assert mod.admit_rates(stale, p, 0, NOW0)[1] == (b"ra", b"2")


@pytest.mark.parametrize("bad", [
    lambda m: m.RatePlan([("a", 0, 60_000, False)], []),
    lambda m: m.RatePlan([("a", 3, 60_000, False)], [((b"x", b"y", b"z"), [1])]),
    lambda m: m.RatePlan([("a", 3, 60_000, False)], [((b"x", b"y", b"z"), [])]),
])
def test_bad_plans_are_refused(rust: ModuleType, twin: ModuleType, bad: Any) -> None:
    for mod in (rust, twin):
        with pytest.raises(mod.CoreError):
            bad(mod)


def test_a_corrupt_state_is_refused(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("a", 3, 60_000, False)])
        with pytest.raises((TypeError, ValueError)):
            mod.admit_rates({"a": (1, 2)}, p, 0, NOW0)
