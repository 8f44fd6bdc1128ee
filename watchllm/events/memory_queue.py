"""A bounded in-process EventQueue: the default sink until a durable pipeline is configured.

It keeps the newest `capacity` events and counts what it had to drop, so memory stays
bounded whatever happens; `drain()` hands events to a consumer (tests, the pipeline).
"""

from __future__ import annotations

from collections import deque

from watchllm.env.base import Row


class MemoryEventQueue:
    def __init__(self, capacity: int = 100_000) -> None:
        self._events: deque[Row] = deque(maxlen=capacity)
        self.accepted = 0
        self.dropped = 0

    def put(self, event: Row) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self.accepted += 1

    def depth(self) -> int:
        return len(self._events)

    def drain(self) -> list[Row]:
        out = list(self._events)
        self._events.clear()
        return out

    def snapshot(self) -> list[Row]:
        return list(self._events)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
