"""The ClickHouse events schema: one source for the DDL, the RowBinary encoder and the tests.

Each table is a tuple of (column name, ClickHouse type). Rows are dicts keyed by column
name; the RowBinary encoder (`watchllm.core.encode_rowbinary`) fills omitted columns
with the type's zero value (NULL for Nullable) and rejects omitted Enum/DateTime columns.
"""

from __future__ import annotations

EVENT_TYPES = (
    "prompt_call",
    "tool_call",
    "agent_step",
    "error",
    "assertion_failed",
    "hallucination_detected",
    "cost_threshold_exceeded",
    "performance_alert",
)
CACHE_STATUSES = ("NONE", "MISS", "HIT", "SEMANTIC_HIT", "BYPASS")


def _enum8(values: tuple[str, ...], start: int = 1) -> str:
    return "Enum8(" + ", ".join(f"'{v}' = {i}" for i, v in enumerate(values, start)) + ")"


EVENT_TYPE_ENUM = _enum8(EVENT_TYPES)
CACHE_STATUS_ENUM = _enum8(CACHE_STATUSES, start=0)

# Fields every event carries (BaseEvent).
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "String"),
    ("event_type", EVENT_TYPE_ENUM),
    ("project_id", "LowCardinality(String)"),
    ("timestamp", "DateTime64(3, 'UTC')"),
    ("run_id", "String"),
    ("user_id", "String"),
    ("tags", "Array(LowCardinality(String))"),
    ("release", "String"),
    ("env", "LowCardinality(String)"),
    ("client_hostname", "String"),
    ("client_sdk_version", "LowCardinality(String)"),
    ("client_platform", "LowCardinality(String)"),
)

# prompt_call fields (the gateway emits one prompt_call per proxied request), the
# error fields, and a JSON string for the remaining type-specific fields.
EVENTS_COLUMNS: tuple[tuple[str, str], ...] = (
    *BASE_COLUMNS,
    ("endpoint", "LowCardinality(String)"),
    ("prompt", "String"),
    ("response", "String"),
    ("model", "LowCardinality(String)"),
    ("provider", "LowCardinality(String)"),
    ("tokens_input", "UInt32"),
    ("tokens_output", "UInt32"),
    ("tokens_cached", "UInt32"),
    ("cost_estimate_usd", "Float64"),
    ("cost_saved_usd", "Float64"),
    ("latency_ms", "Float32"),
    ("time_to_first_token_ms", "Nullable(Float32)"),
    ("status", "LowCardinality(String)"),
    ("http_status", "UInt16"),
    ("cache_status", CACHE_STATUS_ENUM),
    ("request_id", "String"),
    ("key_id", "String"),
    ("error_type", "LowCardinality(String)"),
    ("error_message", "String"),
    ("metadata", "Map(String, String)"),
    ("properties", "String"),
)

TOOL_CALLS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "String"),
    ("project_id", "LowCardinality(String)"),
    ("timestamp", "DateTime64(3, 'UTC')"),
    ("run_id", "String"),
    ("tool_name", "LowCardinality(String)"),
    ("tool_input", "String"),
    ("tool_output", "String"),
    ("latency_ms", "Float32"),
    ("status", "LowCardinality(String)"),
    ("error_message", "String"),
)

AGENT_STEPS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "String"),
    ("project_id", "LowCardinality(String)"),
    ("timestamp", "DateTime64(3, 'UTC')"),
    ("run_id", "String"),
    ("step_number", "UInt32"),
    ("step_name", "String"),
    ("step_type", "LowCardinality(String)"),
    ("input", "String"),
    ("output", "String"),
    ("reasoning", "String"),
    ("latency_ms", "Float32"),
    ("status", "LowCardinality(String)"),
)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "events": EVENTS_COLUMNS,
    "tool_calls": TOOL_CALLS_COLUMNS,
    "agent_steps": AGENT_STEPS_COLUMNS,
}
