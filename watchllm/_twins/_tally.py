"""Twin of `rust_core/src/py/tally.rs`: per-request metrics summed in process."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class RequestTally:
    def __init__(self, latency_bounds: list[float], ttft_bounds: list[float]) -> None:
        self._latency = tuple(latency_bounds)
        self._ttft = tuple(ttft_bounds)
        self._aggregates: dict[tuple[str, str, int], list[Any]] = {}
        self._outcomes: dict[str, int] = {}

    def record(self, route: str, model: str, status: int, duration_s: float,
               ttft_s: float | None = None, prompt_tokens: float = 0.0,
               completion_tokens: float = 0.0, cost_usd: float = 0.0,
               outcome: str | None = None) -> None:
        if not isinstance(route, str) or not isinstance(model, str) \
                or not isinstance(status, int):
            raise TypeError("route and model must be str, status an int")
        key = (route, model, status)
        agg = self._aggregates.get(key)
        if agg is None:
            # token sums as floats, as prometheus keeps them (and the Rust tally)
            agg = self._aggregates[key] = [0, 0.0, 0.0, 0.0,
                                           [0.0] * (len(self._latency) + 1),
                                           [0.0] * (len(self._ttft) + 1)]
        agg[0] += 1
        agg[1] += float(prompt_tokens)
        agg[2] += float(completion_tokens)
        agg[3] += float(cost_usd)
        h = agg[4]
        h[bisect_left(self._latency, duration_s)] += 1
        h[-1] += duration_s
        if ttft_s is not None:
            h = agg[5]
            h[bisect_left(self._ttft, ttft_s)] += 1
            h[-1] += ttft_s
        if outcome is not None:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1

    def drain(self) -> tuple[dict[tuple[str, str, int], list[Any]], dict[str, int]]:
        out = self._aggregates, self._outcomes
        self._aggregates, self._outcomes = {}, {}
        return out

    def __len__(self) -> int:
        return len(self._aggregates)
