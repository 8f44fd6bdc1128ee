"""Typed helpers, one per event type: keyword arguments named like the schema's fields
(watchllm/events/validation.py has the rules). Each returns the event_id, or None when
the event was not queued. Non-string payloads (`tool_input`, `input`...) are sent as JSON.
"""

from __future__ import annotations

import abc
import json
from typing import Any


def as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


class EventHelpers(abc.ABC):
    """Typed helpers for every event type, over the client's `log_event`."""

    @abc.abstractmethod
    def log_event(self, event_type: str, **fields: Any) -> str | None:
        """Queue one event; returns its event_id (None if it was not accepted)."""

    def log_prompt_call(
        self, model: str, prompt: Any = None, response: Any = None, *,
        provider: str | None = None, tokens_input: int | None = None,
        tokens_output: int | None = None, tokens_cached: int | None = None,
        latency_ms: float | None = None, time_to_first_token_ms: float | None = None,
        cost_estimate_usd: float | None = None, status: str = "success",
        http_status: int | None = None, **fields: Any,
    ) -> str | None:
        return self.log_event(
            "prompt_call", model=model, prompt=as_text(prompt), response=as_text(response),
            provider=provider, tokens_input=tokens_input, tokens_output=tokens_output,
            tokens_cached=tokens_cached, latency_ms=latency_ms,
            time_to_first_token_ms=time_to_first_token_ms,
            cost_estimate_usd=cost_estimate_usd, status=status, http_status=http_status,
            **fields)

    def log_tool_call(
        self, tool_name: str, tool_input: Any = None, tool_output: Any = None, *,
        latency_ms: float | None = None, status: str = "success",
        error_message: str | None = None, **fields: Any,
    ) -> str | None:
        return self.log_event(
            "tool_call", tool_name=tool_name, tool_input=as_text(tool_input),
            tool_output=as_text(tool_output), latency_ms=latency_ms, status=status,
            error_message=error_message, **fields)

    def log_agent_step(
        self, step_number: int, step_name: str, *, step_type: str | None = None,
        input: Any = None, output: Any = None, reasoning: str | None = None,
        latency_ms: float | None = None, status: str = "success", **fields: Any,
    ) -> str | None:
        return self.log_event(
            "agent_step", step_number=step_number, step_name=step_name, step_type=step_type,
            input=as_text(input), output=as_text(output), reasoning=reasoning,
            latency_ms=latency_ms, status=status, **fields)

    def log_error(
        self, error_type: str, error_message: str, *, stack_trace: str | None = None,
        **fields: Any,
    ) -> str | None:
        return self.log_event("error", error_type=error_type, error_message=error_message,
                              stack_trace=stack_trace, **fields)

    def log_exception(self, exc: BaseException, **fields: Any) -> str | None:
        import traceback

        trace = "".join(traceback.format_exception(exc))[-64_000:]
        return self.log_error(type(exc).__name__, (str(exc) or repr(exc))[:10_000],
                              stack_trace=trace, **fields)

    def log_assertion_failed(
        self, assertion_name: str, *, expected: Any = None, actual: Any = None,
        message: str | None = None, severity: str = "error", **fields: Any,
    ) -> str | None:
        return self.log_event(
            "assertion_failed", assertion_name=assertion_name, expected=as_text(expected),
            actual=as_text(actual), message=message, severity=severity, **fields)

    def log_hallucination(
        self, detection_method: str, *, confidence: float | None = None,
        claim: str | None = None, evidence: str | None = None, severity: str = "error",
        **fields: Any,
    ) -> str | None:
        return self.log_event(
            "hallucination_detected", detection_method=detection_method,
            confidence=confidence, claim=claim, evidence=evidence, severity=severity,
            **fields)

    def log_cost_threshold_exceeded(
        self, threshold_usd: float, actual_usd: float, *, window: str | None = None,
        severity: str = "error", **fields: Any,
    ) -> str | None:
        return self.log_event(
            "cost_threshold_exceeded", threshold_usd=threshold_usd, actual_usd=actual_usd,
            window=window, severity=severity, **fields)

    def log_performance_alert(
        self, metric: str, threshold: float, actual: float, *, unit: str | None = None,
        severity: str = "error", **fields: Any,
    ) -> str | None:
        return self.log_event(
            "performance_alert", metric=metric, threshold=threshold, actual=actual,
            unit=unit, severity=severity, **fields)
