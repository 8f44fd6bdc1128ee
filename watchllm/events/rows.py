"""How an event becomes rows: which tables it goes to, and what its `events` row holds.

One rule for both delivery paths, the self-hosted pipeline (`pipeline.py`) and the Workers
queue consumer (`env/cloudflare/consumer.py`). Standard library only: it is imported under
Pyodide, where there is no orjson and no threads.

- `route`: every event goes to `events`; `tool_call` also to `tool_calls`, `agent_step`
  to `agent_steps`.
- `EventRows.complete`: events other than `prompt_call` leave columns out. Enum columns
  default to their 0 label (`cache_status` -> `NONE`: the encoder rejects an omitted
  enum), and fields without a column of their own are kept as JSON in `properties`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watchllm.events.schema import EVENTS_COLUMNS

Row = dict[str, Any]
_ENUM_ZERO = re.compile(r"^Enum(?:8|16)\(.*?'([^']*)' = 0\b")


def route(event: Row) -> tuple[str, ...]:
    """The tables an event is stored in."""
    kind = event.get("event_type")
    if kind == "tool_call":
        return ("events", "tool_calls")
    if kind == "agent_step":
        return ("events", "agent_steps")
    return ("events",)


def json_text(value: Any) -> str:
    """Compact JSON (what `properties` holds); values JSON cannot carry become strings."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class EventRows:
    """`complete()` for one `events` column list; `dumps` renders `properties`."""

    columns: frozenset[str]
    enum_defaults: Mapping[str, str]
    dumps: Callable[[Any], str] = json_text

    @classmethod
    def of(cls, columns: tuple[tuple[str, str], ...] = EVENTS_COLUMNS,
           dumps: Callable[[Any], str] = json_text) -> EventRows:
        defaults = {c: m.group(1) for c, t in columns if (m := _ENUM_ZERO.search(t))}
        return cls(frozenset(c for c, _ in columns), defaults, dumps)

    def complete(self, event: Row) -> Row:
        """Fill what an event of another type than prompt_call leaves out (in place)."""
        if event.get("event_type") == "prompt_call":
            return event
        for col, label in self.enum_defaults.items():
            event.setdefault(col, label)
        if "properties" not in event:
            extra = {k: v for k, v in event.items() if k not in self.columns}
            if extra:
                event["properties"] = self.dumps(extra)
        return event
