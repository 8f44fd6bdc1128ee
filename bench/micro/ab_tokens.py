"""Token counts of this checkout's extension against another checkout's, in turns.

    .venv/bin/python bench/micro/ab_tokens.py /path/to/other/checkout [--turns 2]

Each turn runs one process per checkout (its `watchllm._core` first on sys.path) and
prints the best of 7 rounds of `count_chat_tokens` on the micro bench's chat body and
`count_tokens` (o200k) on 2,000 ASCII characters. Processes, not one process, because
two builds of the same extension module cannot be loaded side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])
import watchllm._core as c
from run import chat_body
body = chat_body()
text = open(sys.argv[2] + "/run.py", encoding="utf-8").read()[:2000]
c.count_chat_tokens(body); c.count_tokens(text, "o200k_base")

def best(f, n):
    rounds = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            f()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return min(rounds)

print(f"{c.__file__}: chat body {best(lambda: c.count_chat_tokens(body), 2000):.2f} µs, "
      f"2,000 ASCII chars {best(lambda: c.count_tokens(text, 'o200k_base'), 200):.2f} µs")
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("other", help="another checkout with its extension built in place")
    p.add_argument("--turns", type=int, default=2)
    args = p.parse_args()
    for _ in range(args.turns):
        for checkout in (args.other, str(ROOT)):
            subprocess.run([sys.executable, "-c", CHILD, checkout, str(HERE)], check=True)


if __name__ == "__main__":
    main()
