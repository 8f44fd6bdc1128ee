"""The dead-letter file: events that can never be stored, one JSON line each.

    {"at": ISO time, "table": table or null, "error": why, "event": the event}

Written with one `write()` per call and fsync'd: a dead-lettered event is removed from
the spool's obligations, so the file is its only copy.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("watchllm.events")
Item = tuple[str | None, Any, str]  # (table, event, error)


class DeadLetterFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def write(self, items: list[Item]) -> int:
        """Append `items`; return how many were written."""
        if not items:
            return 0
        at = dt.datetime.now(dt.UTC).isoformat()
        lines = b"".join(
            orjson.dumps({"at": at, "table": t, "error": err, "event": ev},
                         default=repr, option=orjson.OPT_APPEND_NEWLINE)
            for t, ev, err in items
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.error("dead-lettered %d event(s) into %s: %s", len(items), self.path, items[0][2])
        return len(items)
