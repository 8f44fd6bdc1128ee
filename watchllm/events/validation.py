"""Validation of events: the one set of rules for the ingest API and the Python SDK.

    rows, errors = validate_events(payloads, default_project="proj_1")

Pure Python (stdlib only): `watchllm.sdk` imports it without the server's dependencies.
Each payload is a JSON object: the BaseEvent fields plus the fields of its `event_type`
(`FIELDS` below is the whole rule book; docs/analytics.md renders it). A valid payload
becomes a row for the ClickHouse schema (`watchllm/events/schema.py`): timestamps as
epoch milliseconds, enum columns filled, an `event_id` generated when the client sent
none, and the type-specific fields that have no column of their own serialised into
`properties` (JSON). An invalid one yields `FieldError`s naming the event's index and
the field path (`tags[3]`, `metadata.team`). Unknown fields are errors, not silently
dropped: a typo should fail loudly rather than lose data.

Idempotency: the event_id is the identity. Clients (the SDK does) generate it once, so a
retried event has the same id and collapses with its first delivery.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchllm.events.schema import CACHE_STATUSES, EVENT_TYPES, EVENTS_COLUMNS

# Limits (characters for strings). Large text fields match what the gateway keeps per
# request (proxy/context.py MAX_LOGGED_BODY).
MAX_TEXT = 1 << 20
MAX_DETAIL = 64 * 1024
MAX_MESSAGE = 10_000
MAX_NAME = 256
MAX_ID = 128
MAX_LABEL = 64
MAX_TAGS, MAX_TAG = 64, 128
MAX_METADATA, MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 128, 4096
MAX_UINT32 = 2**32 - 1
MAX_LATENCY_MS = 86_400_000.0  # one day
MAX_USD = 1e9
# Timestamps: at most 30 days old (the raw tables expire after 90 days by default; older
# events would be invisible in every default view) and at most 5 minutes in the future
# (clock skew), relative to the validator's clock.
MAX_AGE_MS = 30 * 86_400_000
MAX_SKEW_MS = 5 * 60_000

CALL_STATUSES = ("success", "error", "cancelled")
STEP_STATUSES = ("success", "error", "cancelled", "running", "skipped")
SEVERITIES = ("info", "warning", "error", "critical")
WINDOWS = ("request", "run", "hour", "day", "week", "month")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")


class Invalid(Exception):
    """Raised by a field check; the message is shown to the client."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A field check (returns the normalised value or raises Invalid) and its JSON Schema
    (rendered into /openapi.json, so the published schema is these very rules)."""

    check: Callable[[Any], Any]
    schema: dict[str, Any]

    def __call__(self, value: Any) -> Any:
        return self.check(value)


@dataclass(frozen=True, slots=True)
class Field:
    check: Rule
    required: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class FieldError:
    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"events[{self.index}].{self.field}: {self.message}"


def _type_name(v: Any) -> str:
    return "null" if v is None else {dict: "object", list: "array", str: "string",
                                     bool: "boolean"}.get(type(v), type(v).__name__)


def text(max_len: int, pattern: re.Pattern[str] | None = None, nonempty: bool = False) -> Rule:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise Invalid(f"expected a string, got {_type_name(v)}")
        if len(v) > max_len:
            raise Invalid(f"longer than {max_len} characters ({len(v)})")
        if nonempty and not v:
            raise Invalid("must not be empty")
        if pattern is not None and v and not pattern.fullmatch(v):
            raise Invalid("may contain only letters, digits and . _ : - (starting with a "
                          "letter or digit)")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("is not valid UTF-8 (lone surrogate)") from None
        return v

    schema: dict[str, Any] = {"type": "string", "maxLength": max_len}
    if nonempty:
        schema["minLength"] = 1
    if pattern is not None:
        schema["pattern"] = f"^(?:{pattern.pattern})$"
    return Rule(check, schema)


def integer(lo: int, hi: int) -> Rule:
    def check(v: Any) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise Invalid(f"expected an integer, got {_type_name(v)}")
        if not lo <= v <= hi:
            raise Invalid(f"must be between {lo} and {hi}, got {v}")
        return v

    return Rule(check, {"type": "integer", "minimum": lo, "maximum": hi})


def number(lo: float, hi: float, nullable: bool = False) -> Rule:
    def check(v: Any) -> float | None:
        if v is None and nullable:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise Invalid(f"expected a number, got {_type_name(v)}")
        f = float(v)
        if not math.isfinite(f):
            raise Invalid("must be a finite number")
        if not lo <= f <= hi:
            raise Invalid(f"must be between {lo:g} and {hi:g}, got {f:g}")
        return f

    schema: dict[str, Any] = {"type": "number", "minimum": lo, "maximum": hi}
    return Rule(check, {"anyOf": [schema, {"type": "null"}]} if nullable else schema)


def choice(values: Sequence[str]) -> Rule:
    def check(v: Any) -> str:
        if v not in values or not isinstance(v, str):
            raise Invalid(f"must be one of {', '.join(values)}; got {v!r}")
        return v

    return Rule(check, {"type": "string", "enum": list(values)})


def _http_status(v: Any) -> int:
    n: int = integer(0, 599)(v)
    if 0 < n < 100:
        raise Invalid(f"must be 0 (no response) or an HTTP status 100-599, got {n}")
    return n


http_status = Rule(_http_status, {"type": "integer", "minimum": 0, "maximum": 599})


def _tags(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise Invalid(f"expected an array of strings, got {_type_name(v)}")
    if len(v) > MAX_TAGS:
        raise Invalid(f"at most {MAX_TAGS} tags, got {len(v)}")
    one = text(MAX_TAG, nonempty=True)
    out = []
    for i, t in enumerate(v):
        try:
            out.append(one(t))
        except Invalid as e:
            raise Invalid(str(e)) from _Path(f"[{i}]")
    return out


tags = Rule(_tags, {"type": "array", "maxItems": MAX_TAGS,
                   "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG}})


def _string_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise Invalid(f"expected an object of strings, got {_type_name(v)}")
    if len(v) > MAX_METADATA:
        raise Invalid(f"at most {MAX_METADATA} entries, got {len(v)}")
    key, value = text(MAX_METADATA_KEY, nonempty=True), text(MAX_METADATA_VALUE)
    out = {}
    for k, item in v.items():
        try:
            out[key(k)] = value(item)
        except Invalid as e:
            raise Invalid(str(e)) from _Path(f".{k}")
    return out


string_map = Rule(_string_map, {
    "type": "object", "maxProperties": MAX_METADATA,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY},
    "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE}})


class _Path(Exception):
    """Carries a sub-path (`[3]`, `.team`) from a container check to the error."""


def _timestamp_ms(v: Any) -> int:
    """Epoch milliseconds (integer) or an ISO 8601 string with a time zone."""
    if isinstance(v, str):
        import datetime as dt

        try:
            parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"not an ISO 8601 timestamp: {v[:40]!r}") from None
        if parsed.tzinfo is None:
            raise Invalid("an ISO 8601 timestamp needs a time zone (e.g. 'Z')")
        return round(parsed.timestamp() * 1000)
    if isinstance(v, bool) or not isinstance(v, int):
        raise Invalid(f"expected epoch milliseconds (integer) or ISO 8601, got {_type_name(v)}")
    return v


timestamp_ms = Rule(_timestamp_ms, {
    "oneOf": [{"type": "integer", "description": "epoch milliseconds"},
              {"type": "string", "format": "date-time"}]})
EVENT_ID = text(MAX_ID, ID_PATTERN, nonempty=True)
SHORT = text(MAX_NAME)
NAME = text(MAX_NAME, nonempty=True)
BIG = text(MAX_TEXT)
DETAIL = text(MAX_DETAIL)
MESSAGE = text(MAX_MESSAGE)
COUNT = integer(0, MAX_UINT32)
LATENCY = number(0, MAX_LATENCY_MS)
USD = number(0, MAX_USD)

BASE: dict[str, Field] = {
    "event_id": Field(EVENT_ID, doc="generated (UUID) when absent; the idempotency key"),
    "event_type": Field(choice(EVENT_TYPES), True),
    "project_id": Field(text(MAX_ID, ID_PATTERN, nonempty=True),
                        doc="defaults to the key's project"),
    "timestamp": Field(timestamp_ms, doc="epoch ms or ISO 8601; default now"),
    "run_id": Field(text(MAX_ID)),
    "user_id": Field(SHORT),
    "tags": Field(tags),
    "release": Field(text(MAX_ID)),
    "env": Field(text(MAX_LABEL)),
    "client_hostname": Field(SHORT),
    "client_sdk_version": Field(text(MAX_LABEL)),
    "client_platform": Field(text(MAX_LABEL)),
    "metadata": Field(string_map),
}

LLM: dict[str, Field] = {
    "endpoint": Field(text(MAX_ID)),
    "prompt": Field(BIG),
    "response": Field(BIG),
    "model": Field(SHORT),
    "provider": Field(text(MAX_LABEL)),
    "tokens_input": Field(COUNT),
    "tokens_output": Field(COUNT),
    "tokens_cached": Field(COUNT),
    "cost_estimate_usd": Field(USD),
    "cost_saved_usd": Field(USD),
    "latency_ms": Field(LATENCY),
    "time_to_first_token_ms": Field(number(0, MAX_LATENCY_MS, nullable=True)),
    "status": Field(choice(CALL_STATUSES)),
    "http_status": Field(http_status),
    "cache_status": Field(choice(CACHE_STATUSES)),
    "request_id": Field(text(MAX_ID)),
    "error_type": Field(text(MAX_ID)),
    "error_message": Field(MESSAGE),
}
SEVERITY = Field(choice(SEVERITIES), doc="default error")

FIELDS: dict[str, dict[str, Field]] = {
    "prompt_call": {**LLM, "model": Field(NAME, True)},
    "error": {**LLM, "error_type": Field(text(MAX_ID, nonempty=True), True),
              "error_message": Field(MESSAGE, True), "stack_trace": Field(DETAIL)},
    "tool_call": {
        "tool_name": Field(NAME, True), "tool_input": Field(BIG), "tool_output": Field(BIG),
        "latency_ms": Field(LATENCY), "status": Field(choice(CALL_STATUSES)),
        "error_message": Field(MESSAGE),
    },
    "agent_step": {
        "step_number": Field(COUNT, True), "step_name": Field(NAME, True),
        "step_type": Field(text(MAX_LABEL)), "input": Field(BIG), "output": Field(BIG),
        "reasoning": Field(BIG), "latency_ms": Field(LATENCY),
        "status": Field(choice(STEP_STATUSES)),
    },
    "assertion_failed": {
        "assertion_name": Field(NAME, True), "expected": Field(DETAIL),
        "actual": Field(DETAIL), "message": Field(MESSAGE), "severity": SEVERITY,
    },
    "hallucination_detected": {
        "detection_method": Field(text(MAX_ID, nonempty=True), True),
        "confidence": Field(number(0, 1)), "claim": Field(DETAIL), "evidence": Field(DETAIL),
        "model": Field(SHORT), "severity": SEVERITY,
    },
    "cost_threshold_exceeded": {
        "threshold_usd": Field(USD, True), "actual_usd": Field(USD, True),
        "window": Field(choice(WINDOWS)), "model": Field(SHORT), "severity": SEVERITY,
    },
    "performance_alert": {
        "metric": Field(text(MAX_ID, nonempty=True), True),
        "threshold": Field(number(-MAX_USD, MAX_USD), True),
        "actual": Field(number(-MAX_USD, MAX_USD), True), "unit": Field(text(32)),
        "model": Field(SHORT), "severity": SEVERITY,
    },
}
_COLUMNS = frozenset(c for c, _ in EVENTS_COLUMNS)
SERVER_FIELDS = ("key_id", "properties")  # set by the server, never by a client


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_event_id() -> str:
    return str(uuid.uuid4())


def validate_event(
    payload: Any, index: int = 0, *, default_project: str | None = None,
    now: int | None = None,
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """One payload -> (row, []) or (None, errors)."""
    if not isinstance(payload, dict):
        return None, [FieldError(index, "", f"an event must be a JSON object, got "
                                            f"{_type_name(payload)}")]
    errors: list[FieldError] = []
    kind = payload.get("event_type")
    own = FIELDS.get(kind) if isinstance(kind, str) else None
    spec = BASE if own is None else {**BASE, **own}
    row: dict[str, Any] = {}
    for name, value in payload.items():
        field = spec.get(name) if isinstance(name, str) else None
        if field is None:
            if own is not None or name not in _ALL_TYPE_FIELDS:  # else: type error reported
                why = ("is set by the server" if name in SERVER_FIELDS else
                       f"is not a field of {kind} events" if own is not None else
                       "is not an event field")
                errors.append(FieldError(index, str(name), why))
            continue
        try:
            row[name] = field.check(value)
        except Invalid as e:
            sub = e.__cause__.args[0] if isinstance(e.__cause__, _Path) else ""
            errors.append(FieldError(index, f"{name}{sub}", str(e)))
    for name, field in spec.items():
        if field.required and name not in payload:
            errors.append(FieldError(index, name, "is required"))
    if "project_id" not in payload:
        if default_project is None:
            errors.append(FieldError(index, "project_id", "is required (this key is not "
                                                          "bound to one project)"))
        else:
            row["project_id"] = default_project
    errors += _cross_checks(row, index, now_ms() if now is None else now)
    if errors:
        return None, errors
    return _complete(row), []


def _cross_checks(row: Mapping[str, Any], index: int, now: int) -> list[FieldError]:
    out = []
    ts = row.get("timestamp")
    if isinstance(ts, int):
        if ts < now - MAX_AGE_MS:
            out.append(FieldError(index, "timestamp", "is more than 30 days in the past"))
        elif ts > now + MAX_SKEW_MS:
            out.append(FieldError(index, "timestamp", "is more than 5 minutes in the future"))
    ttft, latency = row.get("time_to_first_token_ms"), row.get("latency_ms")
    if ttft is not None and latency is not None and ttft > latency:
        out.append(FieldError(index, "time_to_first_token_ms", "must not exceed latency_ms"))
    if row.get("tokens_cached", 0) > row.get("tokens_input", MAX_UINT32):
        out.append(FieldError(index, "tokens_cached", "must not exceed tokens_input"))
    return out


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    row.setdefault("event_id", new_event_id())
    row.setdefault("timestamp", now_ms())
    row.setdefault("cache_status", "NONE")
    if row["event_type"] in ("assertion_failed", "hallucination_detected",
                             "cost_threshold_exceeded", "performance_alert"):
        row.setdefault("severity", "error")
    extra = {k: v for k, v in row.items() if k not in _COLUMNS}
    row["properties"] = json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else ""
    return row


_ALL_TYPE_FIELDS = frozenset(n for spec in FIELDS.values() for n in spec)


def validate_events(
    payloads: Sequence[Any], *, default_project: str | None = None, now: int | None = None,
) -> tuple[list[dict[str, Any] | None], list[FieldError]]:
    """Every payload: rows (None where invalid, same order) and all errors."""
    at = now_ms() if now is None else now
    rows: list[dict[str, Any] | None] = []
    errors: list[FieldError] = []
    for i, payload in enumerate(payloads):
        row, errs = validate_event(payload, i, default_project=default_project, now=at)
        rows.append(row)
        errors += errs
    return rows, errors


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema of one event type's payload (the same rules, as data)."""
    spec = {**BASE, **FIELDS[kind]}
    props: dict[str, Any] = {}
    for name, f in spec.items():
        props[name] = {**f.check.schema, **({"description": f.doc} if f.doc else {})}
    props["event_type"] = {"type": "string", "enum": [kind]}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "required": [n for n, f in spec.items() if f.required]}
