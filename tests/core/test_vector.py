"""VectorIndex: the twin returns the same top-k as the extension."""

from __future__ import annotations

import math
import threading
from array import array
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

DIM = 4
components = st.floats(min_value=-100, max_value=100, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) > 1e-30
)
vectors = st.lists(components, min_size=DIM, max_size=DIM).filter(lambda v: any(v))
ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "remove"]),
        st.sampled_from(["a", "b"]),
        st.text("xyz", min_size=1, max_size=2),
        vectors,
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, query=vectors, k=st.integers(-1, 8), threshold=st.floats(-1.1, 1.1))
def test_twin_equals_rust(
    rust: ModuleType,
    twin: ModuleType,
    ops: list[tuple[str, str, str, list[float]]],
    query: list[float],
    k: int,
    threshold: float,
) -> None:
    indexes = [rust.VectorIndex(DIM), twin.VectorIndex(DIM)]
    for op, ns, id, vec in ops:
        results = [getattr(ix, op)(ns, id, *([vec] if op == "add" else [])) for ix in indexes]
        assert results[0] == results[1]
    assert len(indexes[0]) == len(indexes[1])
    for ns in ("a", "b", "c"):
        assert indexes[0].namespace_len(ns) == indexes[1].namespace_len(ns)
        got_rust = indexes[0].search(ns, query, k, threshold)
        got_twin = indexes[1].search(ns, query, k, threshold)
        assert got_rust == got_twin  # same ids, same order, scores bit-identical
        scores = [s for _, s in got_rust]
        assert scores == sorted(scores, reverse=True)
        assert all(s >= threshold for s in scores)


@settings(max_examples=60, deadline=None)
@given(
    dim=st.sampled_from([1, 15, 16, 17, 33, 384]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(-30, 30),
)
def test_float32_scores_bit_identical(
    rust: ModuleType, twin: ModuleType, dim: int, seed: int, scale: float
) -> None:
    """Wide dynamic range and every tail length: the twin's emulated float32 dot
    product gives the same bits as every SIMD path of the extension."""
    import random

    rnd = random.Random(seed)
    indexes = [rust.VectorIndex(dim), twin.VectorIndex(dim)]
    for i in range(40):
        v = [rnd.gauss(0, 1) * math.exp(rnd.uniform(-abs(scale), abs(scale))) for _ in range(dim)]
        v[rnd.randrange(dim)] += 1.0  # never the zero vector
        for ix in indexes:
            ix.add("n", f"id{i % 37}", v)  # some replacements
    q = [rnd.gauss(0, 1) for _ in range(dim)]
    q[0] += 0.5
    got = [ix.search("n", q, 50, -2.0) for ix in indexes]
    assert got[0] == got[1]
    assert len(got[0]) == 37


def test_against_brute_force(rust: ModuleType) -> None:
    import random

    rnd = random.Random(7)
    dim, n = 37, 500
    ix = rust.VectorIndex(dim)
    data = {f"id{i}": [rnd.gauss(0, 1) for _ in range(dim)] for i in range(n)}
    for id, v in data.items():
        ix.add("ns", id, v)
    q = [rnd.gauss(0, 1) for _ in range(dim)]

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    expected = sorted(((cos(v, q), id) for id, v in data.items()), key=lambda t: (-t[0], t[1]))[:10]
    got = ix.search("ns", q, 10, -1.0)
    assert [id for id, _ in got] == [id for _, id in expected]
    for (_, s), (e, _) in zip(got, expected, strict=True):
        assert abs(s - e) < 1e-6


@pytest.mark.parametrize("backend", ["rust", "twin"])
def test_buffers_errors_and_ties(backend: str, rust: ModuleType, twin: ModuleType) -> None:
    mod = rust if backend == "rust" else twin
    ix = mod.VectorIndex(3)
    ix.add("n", "b", array("f", [1, 1, 0]))
    ix.add("n", "a", array("d", [2, 2, 0]))
    ix.add("n", "c", (1, 1, 0))
    assert [i for i, _ in ix.search("n", [1, 1, 0], 3, 0.99)] == ["a", "b", "c"]
    for bad in ([0, 0, 0], [1, 2], [1, math.nan, 0], [1e300, 1e300, 0], "abc"):
        with pytest.raises(mod.CoreError):
            ix.add("n", "x", bad)
    assert ix.search("missing", [1, 0, 0], 5, 0.0) == []
    assert ix.search("n", [1, 0, 0], 0, 0.0) == []
    with pytest.raises(mod.CoreError):
        mod.VectorIndex(0)


def test_search_releases_the_gil(rust: ModuleType) -> None:
    ix = rust.VectorIndex(64)
    for i in range(20_000):
        ix.add("n", str(i), [float((i * j) % 7 + 1) for j in range(64)])
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                assert len(ix.search("n", [1.0] * 64, 5, 0.0)) == 5
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(200):
        ix.add("n", f"w{i}", [1.0] * 64)
    for t in threads:
        t.join()
    assert not errors
    assert ix.namespace_len("n") == 20_200
