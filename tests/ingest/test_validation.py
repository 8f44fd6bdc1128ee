"""Every validation rule has a test that it rejects, naming index and field path; valid
events of every type become complete rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watchllm.events import validation as v
from watchllm.events.schema import EVENT_TYPES

NOW = 1_800_000_000_000
VALID: dict[str, dict[str, Any]] = {
    "prompt_call": {"model": "gpt-4o-mini"},
    "error": {"error_type": "Timeout", "error_message": "took too long"},
    "tool_call": {"tool_name": "search"},
    "agent_step": {"step_number": 1, "step_name": "plan"},
    "assertion_failed": {"assertion_name": "json_valid"},
    "hallucination_detected": {"detection_method": "judge"},
    "cost_threshold_exceeded": {"threshold_usd": 1.0, "actual_usd": 2.5},
    "performance_alert": {"metric": "latency_p95", "threshold": 500, "actual": 900},
}


def event(kind: str = "prompt_call", **extra: Any) -> dict[str, Any]:
    return {"event_type": kind, "timestamp": NOW, **VALID[kind], **extra}


def errors(payload: Any, index: int = 0) -> list[tuple[str, str]]:
    row, errs = v.validate_event(payload, index, default_project="p1", now=NOW)
    assert (row is None) == bool(errs)
    return [(e.field, e.message) for e in errs]


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_valid_events_of_every_type_become_rows(kind: str) -> None:
    row, errs = v.validate_event(event(kind, tags=["a"], metadata={"k": "v"}), 0,
                                 default_project="p1", now=NOW)
    assert errs == [] and row is not None
    assert row["project_id"] == "p1" and row["timestamp"] == NOW
    assert row["event_id"] and row["cache_status"] == "NONE"
    own = set(VALID[kind]) - {c for c, _ in v.EVENTS_COLUMNS}
    assert set(json.loads(row["properties"] or "{}")) >= own


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (event type, fields, field path, message fragment)
    ("prompt_call", {"event_id": ""}, "event_id", "empty"),
    ("prompt_call", {"event_id": "a b"}, "event_id", "only letters"),
    ("prompt_call", {"event_id": "x" * 129}, "event_id", "longer than 128"),
    ("prompt_call", {"event_id": 7}, "event_id", "expected a string"),
    ("prompt_call", {"event_type": "nope"}, "event_type", "must be one of"),
    ("prompt_call", {"project_id": "-x"}, "project_id", "only letters"),
    ("prompt_call", {"timestamp": NOW - v.MAX_AGE_MS - 1}, "timestamp", "30 days in the past"),
    ("prompt_call", {"timestamp": NOW + v.MAX_SKEW_MS + 1}, "timestamp", "in the future"),
    ("prompt_call", {"timestamp": "yesterday"}, "timestamp", "ISO 8601"),
    ("prompt_call", {"timestamp": "2026-11-23T10:00:00"}, "timestamp", "time zone"),
    ("prompt_call", {"timestamp": True}, "timestamp", "epoch milliseconds"),
    ("prompt_call", {"run_id": "r" * 129}, "run_id", "longer than"),
    ("prompt_call", {"user_id": ["u"]}, "user_id", "expected a string"),
    ("prompt_call", {"tags": "a,b"}, "tags", "array"),
    ("prompt_call", {"tags": ["ok", ""]}, "tags[1]", "empty"),
    ("prompt_call", {"tags": ["ok", 3]}, "tags[1]", "expected a string"),
    ("prompt_call", {"tags": ["t"] * (v.MAX_TAGS + 1)}, "tags", "at most"),
    ("prompt_call", {"tags": ["x" * (v.MAX_TAG + 1)]}, "tags[0]", "longer than"),
    ("prompt_call", {"release": "r" * 129}, "release", "longer than"),
    ("prompt_call", {"env": "e" * 65}, "env", "longer than"),
    ("prompt_call", {"client_hostname": "h" * 257}, "client_hostname", "longer than"),
    ("prompt_call", {"client_sdk_version": 1}, "client_sdk_version", "expected a string"),
    ("prompt_call", {"client_platform": "p" * 65}, "client_platform", "longer than"),
    ("prompt_call", {"metadata": ["a"]}, "metadata", "object"),
    ("prompt_call", {"metadata": {"team": 1}}, "metadata.team", "expected a string"),
    ("prompt_call", {"metadata": {"": "x"}}, "metadata.", "empty"),
    ("prompt_call", {"metadata": {str(i): "x" for i in range(v.MAX_METADATA + 1)}}, "metadata",
     "at most"),
    ("prompt_call", {"metadata": {"k": "x" * (v.MAX_METADATA_VALUE + 1)}}, "metadata.k",
     "longer than"),
    ("prompt_call", {"model": ""}, "model", "empty"),
    ("prompt_call", {"prompt": "x" * (v.MAX_TEXT + 1)}, "prompt", "longer than"),
    ("prompt_call", {"response": "\ud800"}, "response", "UTF-8"),
    ("prompt_call", {"endpoint": 1}, "endpoint", "expected a string"),
    ("prompt_call", {"provider": "p" * 65}, "provider", "longer than"),
    ("prompt_call", {"tokens_input": -1}, "tokens_input", "between"),
    ("prompt_call", {"tokens_output": 2**32}, "tokens_output", "between"),
    ("prompt_call", {"tokens_cached": 1.5}, "tokens_cached", "integer"),
    ("prompt_call", {"tokens_input": "10"}, "tokens_input", "integer"),
    ("prompt_call", {"tokens_input": True}, "tokens_input", "integer"),
    ("prompt_call", {"tokens_input": 5, "tokens_cached": 6}, "tokens_cached", "exceed"),
    ("prompt_call", {"cost_estimate_usd": -0.01}, "cost_estimate_usd", "between"),
    ("prompt_call", {"cost_saved_usd": float("nan")}, "cost_saved_usd", "finite"),
    ("prompt_call", {"cost_estimate_usd": "1"}, "cost_estimate_usd", "number"),
    ("prompt_call", {"latency_ms": float("inf")}, "latency_ms", "finite"),
    ("prompt_call", {"latency_ms": v.MAX_LATENCY_MS + 1}, "latency_ms", "between"),
    ("prompt_call", {"time_to_first_token_ms": -1}, "time_to_first_token_ms", "between"),
    ("prompt_call", {"latency_ms": 10, "time_to_first_token_ms": 11}, "time_to_first_token_ms",
     "exceed"),
    ("prompt_call", {"status": "ok"}, "status", "must be one of"),
    ("prompt_call", {"http_status": 42}, "http_status", "HTTP status"),
    ("prompt_call", {"http_status": 600}, "http_status", "between"),
    ("prompt_call", {"cache_status": "hit"}, "cache_status", "must be one of"),
    ("prompt_call", {"request_id": "r" * 129}, "request_id", "longer than"),
    ("prompt_call", {"error_type": "e" * 129}, "error_type", "longer than"),
    ("prompt_call", {"error_message": "e" * (v.MAX_MESSAGE + 1)}, "error_message", "longer"),
    ("prompt_call", {"key_id": "k"}, "key_id", "set by the server"),
    ("prompt_call", {"properties": "{}"}, "properties", "set by the server"),
    ("prompt_call", {"tool_name": "x"}, "tool_name", "not a field of prompt_call"),
    ("prompt_call", {"surprise": 1}, "surprise", "not a field"),
    ("error", {"error_type": ""}, "error_type", "empty"),
    ("error", {"stack_trace": "s" * (v.MAX_DETAIL + 1)}, "stack_trace", "longer than"),
    ("tool_call", {"tool_name": ""}, "tool_name", "empty"),
    ("tool_call", {"tool_input": {"q": 1}}, "tool_input", "expected a string"),
    ("tool_call", {"tool_output": "x" * (v.MAX_TEXT + 1)}, "tool_output", "longer than"),
    ("tool_call", {"status": "running"}, "status", "must be one of"),
    ("tool_call", {"model": "m"}, "model", "not a field of tool_call"),
    ("agent_step", {"step_number": -1}, "step_number", "between"),
    ("agent_step", {"step_name": ""}, "step_name", "empty"),
    ("agent_step", {"step_type": "t" * 65}, "step_type", "longer than"),
    ("agent_step", {"reasoning": 1}, "reasoning", "expected a string"),
    ("agent_step", {"status": "done"}, "status", "must be one of"),
    ("assertion_failed", {"expected": "x" * (v.MAX_DETAIL + 1)}, "expected", "longer than"),
    ("assertion_failed", {"severity": "fatal"}, "severity", "must be one of"),
    ("hallucination_detected", {"confidence": 1.5}, "confidence", "between"),
    ("hallucination_detected", {"detection_method": ""}, "detection_method", "empty"),
    ("cost_threshold_exceeded", {"threshold_usd": -1}, "threshold_usd", "between"),
    ("cost_threshold_exceeded", {"window": "year"}, "window", "must be one of"),
    ("performance_alert", {"actual": "slow"}, "actual", "number"),
    ("performance_alert", {"unit": "u" * 33}, "unit", "longer than"),
]


@pytest.mark.parametrize(("kind", "fields", "path", "message"), BAD,
                         ids=[f"{k}-{p}-{m}" for k, _, p, m in BAD])
def test_each_rule_rejects(kind: str, fields: dict[str, Any], path: str, message: str) -> None:
    found = errors(event(kind, **fields), index=3)
    assert any(f == path and message in m for f, m in found), found


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_required_fields(kind: str) -> None:
    for name in VALID[kind]:
        payload = event(kind)
        del payload[name]
        assert (name, "is required") in errors(payload)
    assert ("event_type", "is required") in errors({"model": "m"})


def test_not_an_object_and_project_required_without_default() -> None:
    assert errors(["x"]) == [("", "an event must be a JSON object, got array")]
    _, errs = v.validate_event(event(), 5, default_project=None, now=NOW)
    assert [(e.index, e.field) for e in errs] == [(5, "project_id")]


def test_batch_reports_each_index_and_keeps_client_event_ids() -> None:
    rows, errs = v.validate_events([event(event_id="keep-me"), {"event_type": "x"}, event()],
                                   default_project="p", now=NOW)
    assert rows[0] is not None and rows[0]["event_id"] == "keep-me"
    assert rows[1] is None and rows[2] is not None and rows[2]["event_id"] != "keep-me"
    assert {e.index for e in errs} == {1}


def test_iso_timestamps_and_json_schema() -> None:
    row, _ = v.validate_event(event(timestamp="2027-01-15T08:00:00.250Z"), now=NOW,
                              default_project="p")
    assert row is not None and row["timestamp"] == NOW + 250
    schema = v.json_schema("tool_call")
    assert schema["required"] == ["event_type", "tool_name"]
    assert schema["additionalProperties"] is False
