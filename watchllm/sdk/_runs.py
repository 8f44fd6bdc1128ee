"""Runs and steps: `with client.run() as run:` / `with run.step("plan") as step:`.

The current run lives in a ContextVar, so it follows threads' own contexts and asyncio
tasks (each task copies the context it was created in): events logged inside the block,
the openai wrapper's included, carry the run_id.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from watchllm.sdk._events import EventHelpers, as_text

if TYPE_CHECKING:
    from watchllm.sdk._client import WatchLLM

_current: ContextVar[Run | None] = ContextVar("watchllm_run", default=None)


def current_run() -> Run | None:
    return _current.get()


class Run(EventHelpers):
    def __init__(self, client: WatchLLM, name: str, run_id: str, fields: dict[str, Any]) -> None:
        self.client = client
        self.name = name
        self.run_id = run_id
        self.fields = fields  # added to every event of the run (user_id, tags, metadata...)
        self.steps = 0
        self._token: Token[Run | None] | None = None

    def log_event(self, event_type: str, **fields: Any) -> str | None:
        return self.client.log_event(event_type, **{**self.fields, "run_id": self.run_id,
                                                    **fields})

    def step(self, name: str, step_type: str | None = None, input: Any = None) -> Step:
        self.steps += 1
        return Step(self, self.steps, name, step_type, input)

    def __enter__(self) -> Run:
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, Exception):
            self.log_exception(exc)
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(kind, exc, tb)


class Step:
    """One agent step; set `output` / `reasoning` inside the block. Logged on exit with
    its latency, status `error` when an exception leaves the block (which propagates)."""

    def __init__(self, run: Run, number: int, name: str, step_type: str | None,
                 input: Any) -> None:
        self.run, self.number, self.name, self.step_type = run, number, name, step_type
        self.input = input
        self.output: Any = None
        self.reasoning: str | None = None
        self._started = 0.0

    def __enter__(self) -> Step:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.run.log_agent_step(
            self.number, self.name, step_type=self.step_type, input=self.input,
            output=as_text(self.output), reasoning=self.reasoning,
            latency_ms=round((time.perf_counter() - self._started) * 1000, 3),
            status="success" if exc is None else "error")

    async def __aenter__(self) -> Step:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(kind, exc, tb)
