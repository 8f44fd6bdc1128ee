"""Python bytecodes per function, by sys.settrace (exact, and slow: a few hundred requests).

    counts = opcodes.start()   # before the measured loop
    ...
    opcodes.report(counts, n, "request")   # after it: per-request counts, largest first
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def start() -> dict[str, int]:
    """Count from now on, in this thread (the event loop's), per function."""
    counts: dict[str, int] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_name}"

        def step(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[name] = counts.get(name, 0) + 1
            return step
        return step
    sys.settrace(trace)
    return counts


def report(counts: dict[str, int], n: int, unit: str) -> None:
    """Stop counting; print the total and the largest functions (NSTATS, 40) per `unit`."""
    sys.settrace(None)
    print(f"{sum(counts.values()) / n:.0f} bytecodes per {unit}; by function:")
    rows = int(os.environ.get("NSTATS", "40"))
    for name, c in sorted(counts.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"{c / n:8.1f}  {name}")
