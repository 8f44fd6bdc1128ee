"""The Queues consumer: a batch of event messages into ClickHouse (RowBinary over HTTP).

    report = await consume(batch, sink, dead_letter=env.EVENTS_DLQ)

Per batch: parse each message (JSON text from `queues.py`), route it to its tables, encode
each table with `watchllm.core.encode_rowbinary` (the pure-Python twin on Workers),
insert, then ack every message. When an insert fails the messages are retried with
exponential backoff (`retry({delaySeconds})`); Queues moves a message to the dead-letter
queue after `max_retries` (wrangler.toml). Messages that can never succeed (not JSON, or
rejected by the encoder) do not wait for that: they go straight to the dead-letter queue
when it is bound, else they are retried until Queues dead-letters them.

Delivery is at-least-once; ClickHouse's ReplacingMergeTree collapses a re-sent event by
event_id. Each insert carries a deduplication token of its messages' ids, so a batch that
Queues re-delivers as it was (the ack lost after the insert) is not counted twice by the
materialized views either; a re-delivery regrouped with other messages is (see
docs/pipeline.md). Routing and row completion are `watchllm.events.rows`, shared with
the self-hosted pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from watchllm import core
from watchllm.env.base import Analytics, Row
from watchllm.env.cloudflare._js import error_text, js_value, to_py, unwrap
from watchllm.events.rows import EventRows, route
from watchllm.events.schema import TABLES

log = logging.getLogger("watchllm.cloudflare")
BACKOFF_BASE_S = 10
BACKOFF_MAX_S = 900
ROWS = EventRows.of(TABLES["events"])


def dedup_token(message_ids: list[str], table: str, data: bytes) -> str:
    """The insert's deduplication token: the same messages re-delivered as the same batch
    (an ack lost after the insert) are stored once, in the tables and the views fed from
    them. The data's checksum is part of it, so different rows never share a token."""
    ids = hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()[:32]
    return f"wlq1:{ids}:{table}:{len(data)}:{core.crc32(data):08x}"


def backoff_s(attempts: int) -> int:
    """Delay before the next delivery: 10 s, 20 s, 40 s... capped at 15 min, with jitter."""
    delay = min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S)
    return max(1, int(delay * random.uniform(0.8, 1.0)))


@dataclass(slots=True)
class Report:
    inserted: int = 0
    retried: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


async def consume(batch: Any, sink: Analytics, dead_letter: Any = None) -> Report:
    report = Report()
    messages = list(unwrap(batch).messages)
    good: list[tuple[Any, Row]] = []
    poison: list[tuple[Any, str]] = []
    for msg in messages:
        body = to_py(msg.body)
        try:
            event = json.loads(body) if isinstance(body, (str, bytes)) else body
        except ValueError as exc:
            poison.append((msg, f"not JSON: {exc}"))
            continue
        if isinstance(event, dict):
            good.append((msg, ROWS.complete(event)))
        else:
            poison.append((msg, "an event must be a JSON object"))

    tables: dict[str, list[tuple[Any, Row]]] = {}
    for msg, event in good:
        for table in route(event):
            tables.setdefault(table, []).append((msg, event))
    encoded: dict[str, bytes] = {}
    bad_ids: set[int] = set()
    for table, items in tables.items():
        columns = list(TABLES[table])
        while True:
            rows = [ev for m, ev in items if id(m) not in bad_ids]
            live = [m for m, _ in items if id(m) not in bad_ids]
            try:
                encoded[table] = core.encode_rowbinary(columns, rows)
                break
            except core.RowBinaryError as exc:
                row = getattr(exc, "row", None)
                if not isinstance(row, int) or not 0 <= row < len(live):
                    raise
                bad_ids.add(id(live[row]))
                poison.append((live[row], f"{table}: {exc}"))

    good = [(m, ev) for m, ev in good if id(m) not in bad_ids]
    try:
        for table, data in encoded.items():
            live = [str(m.id) for m, _ in tables[table] if id(m) not in bad_ids]
            if live:
                await sink.insert_rowbinary(table, [c for c, _ in TABLES[table]], data,
                                            dedup_token=dedup_token(live, table, data))
    except Exception as exc:
        reason = error_text(exc)
        report.errors.append(reason)
        log.warning("ClickHouse insert failed (%s); retrying %d message(s)", reason, len(good))
        for msg, _ in good:
            msg.retry(js_value({"delaySeconds": backoff_s(int(msg.attempts or 1))}))
            report.retried += 1
    else:
        for msg, _ in good:
            msg.ack()
        report.inserted = len(good)

    for msg, reason in poison:
        report.errors.append(reason)
        if dead_letter is not None:
            try:
                payload = {"error": reason, "body": to_py(msg.body), "id": str(msg.id)}
                await unwrap(dead_letter).send(json.dumps(payload, default=str),
                                               js_value({"contentType": "text"}))
                msg.ack()
                report.dead_lettered += 1
                continue
            except Exception as exc:
                log.error("dead-letter send failed: %s", error_text(exc))
        msg.retry(js_value({"delaySeconds": backoff_s(int(msg.attempts or 1))}))
        report.retried += 1
    if poison:
        log.error("%d undeliverable event(s): %s", len(poison), poison[0][1])
    return report
