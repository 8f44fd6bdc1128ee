"""WatchLLM Python SDK: log what your agents do to a WatchLLM gateway (docs/sdk.md).

    from watchllm.sdk import WatchLLM

    wl = WatchLLM(api_key="wl_...", base_url="http://127.0.0.1:8080")
    with wl.run("support-ticket") as run:
        with run.step("search", step_type="tool") as step:
            step.output = search(query)
        run.log_tool_call("search", {"q": query}, results, latency_ms=12.5)
    client = wl.instrument_openai(openai.OpenAI())   # provider calls become prompt_call events

Imports only the standard library and `watchllm.events` (pure Python): no server
dependencies. Events are validated by the same rules as the server's
(`watchllm.events.validation`), batched and sent by a background thread, retried with
backoff and jitter, and flushed on `close()` and at interpreter exit. Logging never
raises into your code.
"""

from watchllm.events.validation import FieldError, validate_event
from watchllm.sdk._client import WatchLLM
from watchllm.sdk._runs import Run, Step, current_run
from watchllm.sdk._transport import Outcome, Transport

__all__ = ["FieldError", "Outcome", "Run", "Step", "Transport", "WatchLLM", "current_run",
           "validate_event"]
