"""Semantic-cache evaluation: cosine alone vs cosine + verify().

    .venv/bin/python bench/semantic_eval.py            # full report
    .venv/bin/python bench/semantic_eval.py --split test

Embeds both sides of every pair in tests/data/semantic_pairs.jsonl with the
local all-MiniLM-L6-v2 (recomputed each run, nothing cached on disk), then
counts a "hit" when cosine >= threshold (and, for the second column, when
verify() accepts). Precision = paraphrase hits / all hits; recall = paraphrase
hits / paraphrases. The default threshold is chosen on the dev split only:
the lowest threshold in 0.80..0.98 whose dev precision with verify is >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchllm.cache.verify import verify  # noqa: E402

DATA = ROOT / "tests" / "data" / "semantic_pairs.jsonl"
THRESHOLDS = [round(0.80 + 0.02 * i, 2) for i in range(10)]  # 0.80 .. 0.98
TARGET_PRECISION = 0.99


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    paraphrase: bool
    kind: str
    split: str
    cos: float
    verified: bool
    reason: str


def load_pairs() -> list[dict[str, str]]:
    with DATA.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def score(rows: list[dict[str, str]]) -> list[Pair]:
    """Cosine of each pair with the local embedder, plus verify()'s verdict."""
    from watchllm.embeddings.local import LocalEmbedder

    emb = LocalEmbedder()
    va = emb.embed_array([r["a"] for r in rows])
    vb = emb.embed_array([r["b"] for r in rows])
    cos = (va * vb).sum(axis=1)
    out = []
    for r, c in zip(rows, cos, strict=True):
        v = verify(r["a"], r["b"])
        out.append(Pair(r["a"], r["b"], r["label"] == "paraphrase", r["kind"], r["split"],
                        float(c), v.ok, v.reason))
    return out


def hits(pairs: list[Pair], threshold: float, use_verify: bool) -> list[Pair]:
    return [p for p in pairs if p.cos >= threshold and (p.verified or not use_verify)]


def precision_recall(pairs: list[Pair], threshold: float, use_verify: bool) -> tuple[float, float]:
    h = hits(pairs, threshold, use_verify)
    good = sum(p.paraphrase for p in h)
    total = sum(p.paraphrase for p in pairs)
    return (good / len(h) if h else 1.0), (good / total if total else 0.0)


def choose_threshold(dev: list[Pair]) -> float:
    for t in THRESHOLDS:
        if precision_recall(dev, t, True)[0] >= TARGET_PRECISION:
            return t
    return THRESHOLDS[-1]


def _pr(p: float, r: float) -> str:
    return f"{p:5.3f} {r:5.3f}"


def report(pairs: list[Pair], splits: list[str]) -> float:
    by = {s: [p for p in pairs if p.split == s] for s in ("dev", "test")}
    default = choose_threshold(by["dev"])
    print(f"\n{len(pairs)} pairs: " + ", ".join(
        f"{s} {len(v)} ({sum(p.paraphrase for p in v)} paraphrases)" for s, v in by.items()))
    print("\nprecision recall   (hit = cos >= T [and verify ok])")
    print("   T   " + "".join(f"| {s:4} cosine  | {s:4} +verify " for s in splits))
    for t in THRESHOLDS:
        row = "".join(f"| {_pr(*precision_recall(by[s], t, False))} "
                      f"| {_pr(*precision_recall(by[s], t, True))} " for s in splits)
        print(f"  {t:.2f} {row}{' <- default' if t == default else ''}")
    print(f"\ndefault threshold {default:.2f} (lowest with dev precision >= {TARGET_PRECISION} "
          "with verify)")
    kinds = sorted({p.kind for p in pairs}, key=lambda k: (k != "paraphrase", k))
    print("\nper kind at the default: paraphrase = hits/n, others = wrong hits/n")
    print(f"  {'kind':12}" + "".join(f"| {s:4} cosine | {s:4} +verify " for s in splits))
    for k in kinds:
        cells = ""
        for s in splits:
            group = [p for p in by[s] if p.kind == k]
            n = len(group)
            c = len(hits(group, default, False))
            v = len(hits(group, default, True))
            cells += f"| {c:4}/{n:<3}     | {v:4}/{n:<3}      "
        print(f"  {k:12}{cells}")
    for s in splits:
        wrong = [p for p in hits(by[s], default, True) if not p.paraphrase]
        missed = [p for p in by[s] if p.paraphrase and p not in hits(by[s], default, True)]
        print(f"\n{s}: wrong hits at {default:.2f} with verify ({len(wrong)}):")
        for p in wrong:
            print(f"  {p.cos:.3f} [{p.kind}] {p.a!r} | {p.b!r}")
        print(f"{s}: missed paraphrases at {default:.2f} ({len(missed)}; "
              f"{sum(p.cos < default for p in missed)} below the threshold, "
              f"{sum(p.cos >= default for p in missed)} rejected by verify):")
        for p in sorted(missed, key=lambda p: -p.cos):
            why = p.reason if p.cos >= default else "cosine below threshold"
            print(f"  {p.cos:.3f} {p.a!r} | {p.b!r} -> {why}")
    return default


def timings(rows: list[dict[str, str]]) -> None:
    from watchllm.cache import verify as vmod
    from watchllm.embeddings.local import LocalEmbedder

    texts = [r["a"] for r in rows] + [r["b"] for r in rows]
    emb = LocalEmbedder()
    t0 = time.perf_counter()
    emb.load()
    load = time.perf_counter() - t0
    emb.embed(["warm up"])
    singles = []
    for text in texts[:40]:
        t0 = time.perf_counter()
        emb.embed([text])
        singles.append(time.perf_counter() - t0)
    singles.sort()
    t0 = time.perf_counter()
    emb.embed(texts)
    batch = time.perf_counter() - t0
    pairs = [(r["a"], r["b"]) for r in rows]
    vmod._parse.cache_clear()
    t0 = time.perf_counter()
    for a, b in pairs:
        vmod.verify(a, b)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for a, b in pairs:  # parses cached: the cost of the checks alone
        vmod.verify(a, b)
    warm = time.perf_counter() - t0
    # Baseline in the same run: a plain lower()+split() of both texts.
    t0 = time.perf_counter()
    for a, b in pairs:
        set(a.lower().split()) == set(b.lower().split())  # noqa: B015
    base = time.perf_counter() - t0
    n = len(pairs)
    print(f"\nembedder: load {load:.2f} s; one short query median "
          f"{singles[len(singles) // 2] * 1e3:.1f} ms; batch of {len(texts)} "
          f"{batch:.2f} s = {len(texts) / batch:.0f} texts/s")
    print(f"verify: {cold / n * 1e6:.0f} us/pair parsing both texts, {warm / n * 1e6:.0f} us/pair "
          f"with parses cached (baseline lower+split+compare {base / n * 1e6:.1f} us/pair)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "test", "both"], default="both")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    rows = load_pairs()
    t0 = time.perf_counter()
    pairs = score(rows)
    print(f"embedded {2 * len(rows)} texts and verified {len(rows)} pairs in "
          f"{time.perf_counter() - t0:.1f} s")
    report(pairs, ["dev", "test"] if args.split == "both" else [args.split])
    if not args.no_timing:
        timings(rows)


if __name__ == "__main__":
    main()
