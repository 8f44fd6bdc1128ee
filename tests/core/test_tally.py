"""`RequestTally`: the Rust tally and its Python twin sum the same requests alike."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

LATENCY = [0.005, 0.01, 0.1, 1.0, 10.0, math.inf]
TTFT = [0.01, 0.5, 2.0, math.inf]

seconds = st.one_of(st.floats(0, 100, allow_nan=False),
                    st.sampled_from([0.0, 0.01, 1.0, 10.0, 1e300, math.inf]))
tokens = st.one_of(st.integers(0, 10**9), st.sampled_from([2**63 - 1, 2**70]),
                   st.floats(0, 1e12, allow_nan=False))
request = st.tuples(
    # NULs in the labels: the Rust tally's key must still tell the pairs apart
    st.sampled_from(["chat/completions", "embeddings", "a\0b", "a"]),
    st.sampled_from(["gpt-4o-mini", "", "modèle-ü", "c", "b\0c", "\0"]),
    st.sampled_from([200, 400, 429, 499, 502]),
    seconds,
    st.one_of(st.none(), seconds),
    tokens,
    tokens,
    st.floats(0, 1e6, allow_nan=False),
    st.one_of(st.none(), st.sampled_from(["HIT", "MISS", "BYPASS", "SEMANTIC_HIT"])),
)


def _run(module: ModuleType, steps: list[tuple[Any, ...]], drain_every: int) -> list[Any]:
    tally = module.RequestTally(LATENCY, TTFT)
    out = []
    for i, step in enumerate(steps, 1):
        tally.record(*step)
        if i % drain_every == 0:
            out.append(tally.drain())
    out.append((len(tally), tally.drain(), len(tally)))
    return out


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(request, max_size=60), drain_every=st.integers(1, 80))
def test_tally_twin_equals_rust(rust: ModuleType, twin: ModuleType,
                                steps: list[tuple[Any, ...]], drain_every: int) -> None:
    assert _run(rust, steps, drain_every) == _run(twin, steps, drain_every)


def test_buckets_are_le_and_the_sum_follows(rust: ModuleType, twin: ModuleType) -> None:
    for module in (rust, twin):
        tally = module.RequestTally(LATENCY, TTFT)
        tally.record("r", "m", 200, 0.01, None)  # on a bound: that bucket ("le")
        tally.record("r", "m", 200, 0.0100001, 0.5, 3, 4, 0.25, "HIT")
        tally.record("r", "m", 200, 1e9)  # past every finite bound: +inf's
        requests, outcomes = tally.drain()
        n, prompt, completion, usd, latency, ttft = requests[("r", "m", 200)]
        assert (n, prompt, completion, usd) == (3, 3, 4, 0.25)
        assert latency == [0, 1, 1, 0, 0, 1, 0.01 + 0.0100001 + 1e9]
        assert ttft == [0, 1, 0, 0, 0.5]
        assert outcomes == {"HIT": 1}


@pytest.mark.parametrize("bad", [None, 3, b"x"])
def test_labels_must_be_text(rust: ModuleType, twin: ModuleType, bad: Any) -> None:
    for module in (rust, twin):
        with pytest.raises(TypeError):
            module.RequestTally(LATENCY, TTFT).record("r", bad, 200, 0.1)
        with pytest.raises(TypeError):
            module.RequestTally(LATENCY, TTFT).record("r", "m", 200.0, 0.1)


def test_labels_with_nuls_stay_apart(rust: ModuleType, twin: ModuleType) -> None:
    for module in (rust, twin):
        tally = module.RequestTally(LATENCY, TTFT)
        tally.record("a\0b", "c", 200, 0.1)
        tally.record("a", "b\0c", 200, 0.1)
        tally.record("a", "b", 2000, 0.1)
        tally.record("a", "b\0" + "200", 0, 0.1)
        assert len(tally) == 4
