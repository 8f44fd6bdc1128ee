"""`RateTable` (`admit`, `settle`, `adjust`, the mapping methods, `sweep`): the Rust
extension and its twin decide, write and format alike (random plans, states, clocks,
usages and deltas; stale and re-planned buckets; resets from milliseconds to hours), and
bad plans or states are refused alike."""

from __future__ import annotations

import time
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
    names = [("l" + k, "r" + k, "s" + k) for k, *_ in rs]
    groups = [(names[0], list(range(len(rs))))] + [(n, [i]) for i, n in enumerate(names)]
    return mod.RatePlan(rs, groups)


@settings(max_examples=300, deadline=None)
@given(rs=rows, trace=steps, tokens_first=st.integers(0, 10))
def test_twin_equals_rust(rust: ModuleType, twin: ModuleType, rs: Any, trace: Any,
                          tokens_first: int) -> None:
    plans = {m: plan(m, rs) for m in (rust, twin)}
    tables = {m: m.RateTable() for m in (rust, twin)}
    now = NOW0
    for step, (dt, tokens, delta) in enumerate([(0, tokens_first, 0), *trace]):
        now += dt
        grants = [tables[m].admit(plans[m], tokens, now) for m in (rust, twin)]
        assert (grants[0] is None) == (grants[1] is None)
        assert tables[rust].to_dict() == tables[twin].to_dict()
        assert len(tables[rust]) == len(tables[twin])
        if grants[0] is None:
            continue
        assert grants[0].rate_headers == grants[1].rate_headers
        assert grants[0].estimated_tokens == grants[1].estimated_tokens == tokens
        for m, grant in zip((rust, twin), grants, strict=True):
            if step % 2:  # a settle (once only), or an adjustment of the token rows
                tables[m].settle(grant, tokens + delta, now)
                tables[m].settle(grant, 0, now)
                assert grant.settled
            else:
                tables[m].adjust(plans[m], delta, now)
        assert tables[rust].to_dict() == tables[twin].to_dict()


def test_a_stale_or_replanned_bucket(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("a", 3, 60_000, False)])
        # used 2 of 3 under an old limit of 6 per minute (L0 = 6): the level is kept
        rates = mod.RateTable()
        rates["a"] = (NOW0 + 20_000, 0, 6)
        grant = rates.admit(p, 0, NOW0)
        assert grant.rate_headers[:3] == [("la", "3"), ("ra", "0"), ("sa", "1m0s")]
        assert rates.admit(p, 0, NOW0) is None  # full: nothing written
        assert rates.get("a") == (NOW0 + 60_000, 0, 3)
        stale = mod.RateTable()
        stale["a"] = (NOW0 - 1, 0, 3)
        assert stale.admit(p, 0, NOW0).rate_headers[1] == ("ra", "2")


def test_settle_reconciles_the_token_rows_once(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("r", 10, 60_000, False), ("t", 1_000, 60_000, True)])
        rates = mod.RateTable()
        grant = rates.admit(p, 100, NOW0)
        assert (grant.estimated_tokens, grant.settled) == (100, False)
        assert rates.get("t") == (NOW0 + 6_000, 0, 1_000)  # 100 of 1,000 per minute
        rates.settle(grant, 250, NOW0)  # used 150 more than estimated
        assert rates.get("t") == (NOW0 + 15_000, 0, 1_000)
        assert rates.get("r") == (NOW0 + 6_000, 0, 10)  # requests are not reconciled
        rates.settle(grant, 0, NOW0)  # settled already: no change
        assert rates.get("t") == (NOW0 + 15_000, 0, 1_000)
        refund = rates.admit(p, 700, NOW0)
        rates.settle(refund, -5, NOW0)  # a negative usage counts as 0: all 700 back
        assert rates.get("t") == (NOW0 + 15_000, 0, 1_000)


def test_the_system_clock_is_used_without_now(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("r", 10, 60_000, False)])
        rates = mod.RateTable()
        before = time.time_ns() // 1_000_000
        assert rates.admit(p, 0) is not None
        tat = rates.get("r")[0]
        assert before + 6_000 <= tat <= time.time_ns() // 1_000_000 + 6_000


def test_sweep_drops_only_full_buckets(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        rates = mod.RateTable()
        rates["old"] = (NOW0 - 1, 5, 3)
        rates["live"] = (NOW0 + 1, 0, 3)
        rates.sweep(NOW0)
        assert rates.to_dict() == {"live": (NOW0 + 1, 0, 3)} and len(rates) == 1


@pytest.mark.parametrize("bad", [
    lambda m: m.RatePlan([("a", 0, 60_000, False)], []),
    lambda m: m.RatePlan([("a", 3, 60_000, False)], [(("x", "y", "z"), [1])]),
    lambda m: m.RatePlan([("a", 3, 60_000, False)], [(("x", "y", "z"), [])]),
])
def test_bad_plans_are_refused(rust: ModuleType, twin: ModuleType, bad: Any) -> None:
    for mod in (rust, twin):
        with pytest.raises(mod.CoreError):
            bad(mod)


@pytest.mark.parametrize("state", [(1, 2), (1, -1, 3), (1, 0, 0), (1, 0, 1 << 63)])
def test_a_corrupt_state_is_refused(rust: ModuleType, twin: ModuleType, state: Any) -> None:
    for mod in (rust, twin):
        rates = mod.RateTable()
        with pytest.raises((TypeError, ValueError, OverflowError)):
            rates["a"] = state
        assert len(rates) == 0


def test_out_of_range_numbers_are_refused(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        p = plan(mod, [("a", 3, 60_000, True)])
        rates = mod.RateTable()
        with pytest.raises(OverflowError):
            rates.admit(p, 1 << 63, NOW0)
        grant = rates.admit(p, 1, NOW0)
        with pytest.raises(OverflowError):
            rates.settle(grant, 1 << 63, NOW0)


held_groups = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**8), st.booleans(),
                                 st.sampled_from([0.001, 0.06, 1.0, 60.0, 86.4])),
                       min_size=1, max_size=2)
takes = st.lists(st.tuples(st.integers(0, 300), st.sampled_from([0.0, 0.0001, 0.3, 2.0])),
                 max_size=40)


def held(mod: ModuleType, size: int, tokens: int, groups: Any, owner: object) -> Any:
    spec = [((f"l{i}", str(base)), f"r{i}", f"s{i}", base, reset, tok, mpu)
            for i, (base, reset, tok, mpu) in enumerate(groups)]
    return mod.HeldRates(size, tokens, 100.0, 5.0, spec, owner)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 50), tokens=st.integers(0, 5_000), groups=held_groups,
       trace=takes)
def test_held_rates_twin_equals_rust(rust: ModuleType, twin: ModuleType, size: int,
                                     tokens: int, groups: Any, trace: Any) -> None:
    """A prefetched grant admits, counts down and formats its headers alike; it refuses
    when used up or past its time, and `low` asks for the next grant alike."""
    owner = object()
    grants = {m: held(m, size, tokens, groups, owner) for m in (rust, twin)}
    now = 100.0
    for cost, dt in trace:
        now += dt
        got = [grants[m].take(cost, now) for m in (rust, twin)]
        assert (got[0] is None) == (got[1] is None)
        if got[0] is not None:
            assert got[0].rate_headers == got[1].rate_headers
            assert got[0].estimated_tokens == got[1].estimated_tokens == cost
            assert got[0].owner is got[1].owner is owner
            assert [g.mark_settled() for g in got] == [True, True]
            assert [g.mark_settled() for g in got] == [False, False]
        assert [(g.req, g.tok, g.low(now)) for g in grants.values()] \
            == [(grants[twin].req, grants[twin].tok, grants[twin].low(now))] * 2
    assert grants[rust].drain() == grants[twin].drain()
    assert [grants[m].take(0, 100.0) for m in (rust, twin)] == [None, None]  # drained


def test_a_held_grant_counts_down_and_expires(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        # requests: 500 left in the bucket after the grant, reset 1,200 ms, 60 ms a request
        grant = held(mod, 3, 100, [(500, 1_200, False, 60.0)], None)
        first = grant.take(10, 100.0)
        assert first.rate_headers == [("l0", "500"), ("r0", "502"), ("s0", "1.08s")]
        assert (grant.req, grant.tok, grant.low(100.0)) == (2, 90, False)
        assert grant.take(91, 100.0) is None  # more tokens than are left: nothing taken
        assert grant.take(0, 100.5).rate_headers[2] == ("s0", "640ms")  # 500 ms later
        assert grant.low(100.5)  # 1 of 3 left
        assert grant.take(0, 105.0) is None  # past its time (5 s)
        with pytest.raises(TypeError):  # a prefetch's grant is settled in Python
            mod.RateTable().settle(first, 10, NOW0)


def test_a_bad_held_grant_is_refused(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        with pytest.raises(mod.CoreError):
            mod.HeldRates(-1, 0, 0.0, 1.0, [], None)
        with pytest.raises(mod.CoreError):
            mod.HeldRates(1, 0, 0.0, float("nan"), [], None)


slot_steps = st.lists(st.one_of(
    st.tuples(st.just("take"), st.integers(0, 300), st.sampled_from([0.0, 0.3, 2.0])),
    st.tuples(st.just("settle"), st.integers(-5, 400), st.integers(0, 3)),
    st.tuples(st.just("drain"), st.just(0), st.just(0)),
    st.tuples(st.just("busy"), st.booleans(), st.just(0)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 20), tokens=st.integers(0, 2_000), steps=slot_steps,
       refill=st.booleans())
def test_held_slot_twin_equals_rust(rust: ModuleType, twin: ModuleType, size: int,
                                    tokens: int, steps: Any, refill: bool) -> None:
    """A caller's slot admits from its grant, tells Python of a miss, of a low grant (not
    while another is on its way) and of the first delta to send, and sums its settles'
    deltas (once per grant) alike; a callback may replace the grant it takes from."""
    logs: dict[ModuleType, list[Any]] = {rust: [], twin: []}
    slots: dict[ModuleType, Any] = {}
    granted: dict[ModuleType, list[Any]] = {rust: [], twin: []}

    def new_grant(mod: ModuleType, at: float) -> Any:  # made at `at`: usable for 5 s
        spec = [(("l", "1000"), "r", "s", 1_000, 500, True, 0.06)]
        return mod.HeldRates(size, tokens, at, 5.0, spec, slots[mod])

    for mod in (rust, twin):
        log = logs[mod]

        def on_miss(now: float, mod: ModuleType = mod, log: list[Any] = log) -> None:
            log.append(("miss", now))
            if refill:  # as a landing grant does: the slot takes from the new one
                slots[mod].held = new_grant(mod, now)

        slots[mod] = mod.HeldSlot(on_miss, lambda now, log=log: log.append(("low", now)),
                                  lambda log=log: log.append(("pending",)))
        slots[mod].held = new_grant(mod, 100.0)
    now = 100.0
    for kind, a, b in steps:
        for mod in (rust, twin):
            slot = slots[mod]
            if kind == "take":
                got = slot.take(a, now + b)
                logs[mod].append(None if got is None else
                                 (got.rate_headers, got.estimated_tokens, got.owner is slot))
                if got is not None:
                    granted[mod].append(got)
            elif kind == "settle" and granted[mod]:
                slot.settle(granted[mod][b % len(granted[mod])], a)
            elif kind == "drain":
                logs[mod].append(slot.drain_pending())
            elif kind == "busy":
                slot.busy = a
            logs[mod].append((slot.pending, slot.busy))
        if kind == "take":
            now += b
    assert logs[rust] == logs[twin]


@pytest.mark.parametrize("which", ["rust", "twin"])
def test_held_slot_take_reads_pythons_monotonic_clock(which: str, rust: ModuleType,
                                                      twin: ModuleType) -> None:
    """`take(tokens)` without `now` is `take(tokens, time.monotonic())`: a grant made now
    admits, one whose time ran out before now does not (and tells of the miss then)."""
    mod = rust if which == "rust" else twin
    misses: list[float] = []
    slot = mod.HeldSlot(misses.append, lambda now: None, lambda: None)
    spec = [(("l", "10"), "r", "s", 10, 500, False, 6.0)]
    slot.held = mod.HeldRates(4, 100, time.monotonic(), 60.0, spec, slot)
    assert slot.take(1) is not None and misses == []
    slot.held = mod.HeldRates(4, 100, time.monotonic() - 2.0, 1.0, spec, slot)
    before = time.monotonic()
    assert slot.take(1) is None
    assert len(misses) == 1 and before <= misses[0] <= time.monotonic()
