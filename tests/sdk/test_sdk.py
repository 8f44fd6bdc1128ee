"""The SDK against a fake transport: batching by size and interval, retries, refusals,
the bounded buffer, never raising, runs and steps, asyncio, exit flush, and importing
without the server's dependencies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from watchllm.sdk import WatchLLM


class Fake:
    """A transport that records batches and answers from a script (default 202)."""

    def __init__(self, answers: list[Any] | None = None) -> None:
        self.answers = answers or []
        self.batches: list[list[dict[str, Any]]] = []
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str],
                 timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.gate.wait()
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else 202
        if isinstance(answer, Exception):
            raise answer
        events = json.loads(body)["events"]
        if answer == 202:
            self.batches.append(events)
        return answer, {}, b'{"accepted": [], "rejected": []}'

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches for e in b]


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[WatchLLM, Fake]]]:
    clients: list[WatchLLM] = []

    def build(answers: list[Any] | None = None, **kw: Any) -> tuple[WatchLLM, Fake]:
        fake = Fake(answers)
        kw.setdefault("flush_interval", 10.0)
        wl = WatchLLM("wl_test", "http://gw.invalid", transport=fake, backoff=0.001, **kw)
        clients.append(wl)
        return wl, fake

    yield build
    for wl in clients:
        wl.close(timeout=1)


def test_batches_by_size_then_flush(make: Any) -> None:
    wl, fake = make(batch_size=3)
    ids = [wl.log_tool_call("search", {"q": i}) for i in range(7)]
    assert all(ids)
    assert wl.flush(5)
    assert [len(b) for b in fake.batches] == [3, 3, 1]
    assert [e["event_id"] for e in fake.events] == ids
    assert fake.events[0]["tool_input"] == '{"q": 0}'
    assert fake.events[0]["client_sdk_version"].startswith("python/")


def test_batches_by_interval(make: Any) -> None:
    wl, fake = make(batch_size=100, flush_interval=0.05)
    wl.log_prompt_call("gpt-4o", "hi", "hello", tokens_input=3)
    deadline = time.monotonic() + 3
    while not fake.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake.events) == 1


def test_retries_network_errors_5xx_and_429(make: Any) -> None:
    wl, fake = make(answers=[OSError("refused"), 503, 429, 202])
    wl.log_error("Boom", "it broke")
    assert wl.flush(5)
    assert fake.calls == 4 and len(fake.events) == 1 and wl.stats["sent"] == 1


def test_gives_up_after_max_retries_and_refusals_are_not_retried(make: Any) -> None:
    wl, fake = make(answers=[500] * 10, max_retries=2)
    wl.log_error("Boom", "x")
    assert wl.flush(5)
    assert fake.calls == 3 and wl.stats["failed"] == 1
    wl2, fake2 = make(answers=[401])
    wl2.log_error("Boom", "x")
    assert wl2.flush(5)
    assert fake2.calls == 1 and wl2.stats["rejected"] == 1


def test_413_splits_the_batch(make: Any) -> None:
    wl, fake = make(answers=[413], batch_size=4)
    for i in range(4):
        wl.log_agent_step(i, f"s{i}")
    assert wl.flush(5)
    assert [len(b) for b in fake.batches] == [2, 2]


def test_full_buffer_drops_new_events_and_never_raises(make: Any) -> None:
    wl, fake = make(batch_size=2, max_buffer=5)
    fake.gate.clear()  # the sender hangs: the buffer fills up
    results = [wl.log_tool_call("t") for _ in range(20)]
    assert results.count(None) == wl.stats["dropped"] > 0
    fake.gate.set()
    assert wl.flush(5)
    assert len(fake.events) == 20 - wl.stats["dropped"]


def test_invalid_events_are_dropped_not_raised(make: Any) -> None:
    reported: list[str] = []
    wl, fake = make(on_error=lambda kind, detail: reported.append(kind))
    assert wl.log_event("nope") is None
    assert wl.log_prompt_call("m", tokens_input=-1) is None
    assert wl.log_event("prompt_call", model=object()) is None
    assert wl.log_tool_call("t", latency_ms=float("nan")) is None
    assert wl.stats["invalid"] == 4 and reported == ["invalid"] * 4
    wl.flush(2)
    assert fake.events == []


def test_run_steps_and_errors(make: Any) -> None:
    wl, fake = make()
    with pytest.raises(ValueError, match="bad tool"), wl.run("job", user_id="u1") as run:
        with run.step("plan", step_type="llm", input="task") as step:
            step.output = {"plan": ["a"]}
            step.reasoning = "simple"
        wl.log_tool_call("search")  # the client picks up the current run too
        with run.step("act"):
            raise ValueError("bad tool")
    wl.log_tool_call("outside")
    assert wl.flush(5)
    kinds = [(e["event_type"], e.get("run_id")) for e in fake.events]
    rid = run.run_id
    assert kinds == [("agent_step", rid), ("tool_call", rid), ("agent_step", rid),
                     ("error", rid), ("tool_call", None)]
    plan, _, act, err, _ = fake.events
    assert (plan["step_number"], plan["output"], plan["status"]) == (1, '{"plan": ["a"]}',
                                                                     "success")
    assert (act["step_number"], act["status"]) == (2, "error")
    assert err["error_type"] == "ValueError" and "bad tool" in err["stack_trace"]
    assert plan["user_id"] == "u1"


async def test_asyncio_tasks_share_the_run(make: Any) -> None:
    wl, fake = make()

    async def work(i: int) -> None:
        await asyncio.sleep(0)
        wl.log_tool_call(f"t{i}")

    async with wl.run() as run:
        await asyncio.gather(*(work(i) for i in range(5)))
    await work(9)
    assert await wl.aflush()
    by_tool = {e["tool_name"]: e.get("run_id") for e in fake.events}
    assert by_tool == {**{f"t{i}": run.run_id for i in range(5)}, "t9": None}


def test_closed_client_drops(make: Any) -> None:
    wl, fake = make()
    wl.log_tool_call("a")
    wl.close()
    assert wl.log_tool_call("b") is None
    assert [e["tool_name"] for e in fake.events] == ["a"]


def test_flush_at_interpreter_exit(tmp_path: Any) -> None:
    out = tmp_path / "sent.json"
    script = textwrap.dedent(f"""
        import json
        from watchllm.sdk import WatchLLM
        sent = []
        def transport(url, body, headers, timeout):
            sent.extend(json.loads(body)["events"])
            open({str(out)!r}, "w").write(json.dumps(sent))
            return 202, {{}}, b"{{}}"
        wl = WatchLLM("k", "http://x", transport=transport, flush_interval=60)
        for i in range(3):
            wl.log_tool_call(f"t{{i}}")
        # no close(): the atexit hook must deliver
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert [e["tool_name"] for e in json.loads(out.read_text())] == ["t0", "t1", "t2"]


BLOCKED = ["orjson", "aiohttp", "httptools", "granian", "uvloop", "clickhouse_connect", "chdb",
           "asyncpg", "redis", "prometheus_client", "cryptography", "httpx", "numpy",
           "openai", "watchllm._core"]


def test_imports_without_server_dependencies() -> None:
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r} or name in {BLOCKED!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from watchllm.sdk import WatchLLM
        wl = WatchLLM("k", "http://127.0.0.1:9", transport=lambda *a: (202, {{}}, b"{{}}"))
        assert wl.log_tool_call("t") is not None
        wl.close()
        loaded = [m for m in sys.modules if m.startswith("watchllm.")]
        assert not any(m.startswith(("watchllm.app", "watchllm.routes", "watchllm.env"))
                       for m in loaded), loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_public_api() -> None:
    import watchllm.sdk as sdk

    assert sorted(sdk.__all__) == ["FieldError", "Outcome", "Run", "Step", "Transport",
                                   "WatchLLM", "current_run", "validate_event"]
