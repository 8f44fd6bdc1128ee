"""Request parameters of the analytics API, parsed and bounded before any SQL is built.

Everything here turns strings from a query string into typed values (or raises
InvalidRequestError naming the parameter); the SQL only ever receives them as bound
parameters (`{name:Type}`), never as text.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass

from watchllm.errors import InvalidRequestError

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_RANGE_MS = 366 * DAY_MS


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    span_ms: int
    step_ms: int  # bucket width; divides a day, so buckets align on UTC midnight

    @property
    def hourly(self) -> bool:
        """Buckets of whole hours: answered by the usage_hourly view alone."""
        return self.step_ms % HOUR_MS == 0


PERIODS = {
    "1h": Period("1h", HOUR_MS, 60_000),
    "6h": Period("6h", 6 * HOUR_MS, 5 * 60_000),
    "24h": Period("24h", DAY_MS, HOUR_MS),
    "7d": Period("7d", 7 * DAY_MS, 6 * HOUR_MS),
    "30d": Period("30d", 30 * DAY_MS, DAY_MS),
}

# metric -> how it is computed from a bucket's sums (see queries.SERIES_COLUMNS)
METRICS = ("requests", "errors", "error_rate", "cache_hits", "cache_hit_rate", "tokens_input",
           "tokens_output", "tokens", "cost_usd", "cost_saved_usd", "latency_p50_ms",
           "latency_p95_ms", "latency_p99_ms")

LOG_FILTERS = ("status", "model", "run_id", "event_type")
MAX_LOG_LIMIT = 200
MAX_Q = 200


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(name: str, raw: str | None, default: int) -> int:
    """Epoch milliseconds, or an ISO 8601 date-time (UTC when no zone is given)."""
    if raw is None or raw == "":
        return default
    if raw.lstrip("-").isdigit():
        value = int(raw)
    else:
        try:
            parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(
                f"'{name}' must be epoch milliseconds or ISO 8601, got {raw[:40]!r}",
                param=name) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        value = round(parsed.timestamp() * 1000)
    if not 0 <= value < 2**41:  # 1970 .. year 2039+: DateTime64(3) territory, no overflow
        raise InvalidRequestError(f"'{name}' is out of range", param=name)
    return value


def time_range(params: dict[str, str], default_span_ms: int = DAY_MS) -> tuple[int, int]:
    end = parse_time("to", params.get("to"), now_ms() + 1)
    start = parse_time("from", params.get("from"), end - default_span_ms)
    if start >= end:
        raise InvalidRequestError("'from' must be before 'to'", param="from")
    if end - start > MAX_RANGE_MS:
        raise InvalidRequestError("the range may span at most 366 days", param="from")
    return start, end


def period(raw: str | None) -> Period:
    p = PERIODS.get(raw or "24h")
    if p is None:
        raise InvalidRequestError(f"'period' must be one of {', '.join(PERIODS)}", param="period")
    return p


def metrics(raw: str | None) -> list[str]:
    names = [m.strip() for m in (raw or "requests").split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names or len(names) > len(METRICS):
        raise InvalidRequestError(
            f"unknown metric {bad[0]!r}; known: {', '.join(METRICS)}" if bad
            else "'metric' must name at least one metric", param="metric")
    return list(dict.fromkeys(names))


def limit(raw: str | None, default: int = 50) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LOG_LIMIT:
        raise InvalidRequestError(f"'limit' must be an integer from 1 to {MAX_LOG_LIMIT}",
                                  param="limit")
    return int(raw)


def encode_cursor(ts_ms: int, event_id: str) -> str:
    raw = f"{ts_ms}:{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[int, str]:
    """The (timestamp ms, event_id) of the last row of the previous page."""
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        ts, sep, event_id = text.partition(":")
        if not sep or not ts.isdigit() or not event_id:
            raise ValueError(text)
        return int(ts), event_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("'cursor' is not a cursor this API returned",
                                  param="cursor") from None


def text_param(params: dict[str, str], name: str, max_len: int = 256) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len:
        raise InvalidRequestError(f"'{name}' is longer than {max_len} characters", param=name)
    return value
