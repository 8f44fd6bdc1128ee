"""Micro-benchmarks of the core: Rust (`watchllm._core`) vs the pure-Python twin vs
the obvious baseline, all measured in the same run. Not part of the test suite.

    .venv/bin/python bench/micro/run.py [--quick]

Prints a Markdown table; docs/core.md records a run with this exact command.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Single-core comparison: the Rust search runs on one core, so does numpy's BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from watchllm import _core as rust  # noqa: E402
from watchllm import _twins as twin  # noqa: E402
from watchllm.events.clickhouse_schema import input_source, insert_select  # noqa: E402
from watchllm.events.schema import EVENTS_COLUMNS  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []


def compare(
    fns: dict[str, Callable[[], Any]], *, min_time: float = 0.1, rounds: int = 7
) -> dict[str, float]:
    """Best seconds per call of each function, measured in interleaved rounds so that
    load from other processes on the shared machine hits all of them alike."""
    batch = {}
    for name, fn in fns.items():
        fn()
        n, t0 = 1, time.perf_counter()
        while True:
            for _ in range(n):
                fn()
            dt = time.perf_counter() - t0
            if dt >= min_time / 4:
                break
            n, t0 = n * 2, time.perf_counter()
        batch[name] = max(1, int(n * min_time / dt))
    best_of = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.disable()
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                fn()
            best_of[name] = min(best_of[name], (time.perf_counter() - t0) / batch[name])
            gc.enable()
    return best_of


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def row(bench: str, impl: str, value: str, note: str = "") -> None:
    ROWS.append((bench, impl, value, note))
    print(f"  {bench:<28} {impl:<34} {value:>14}  {note}", flush=True)


def chat_body() -> bytes:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "system",
                    "content": "You are a concise support assistant for an e-commerce site. " * 3,
                },
                {
                    "role": "user",
                    "content": "My order #48213 has not arrived yet, it has been 9 days.",
                },
                {
                    "role": "assistant",
                    "content": "I'm sorry to hear that. Could you confirm the shipping address?",
                },
                {
                    "role": "user",
                    "content": "Sure: 221B Baker Street, London. Can you check the carrier status?",
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "track_order",
                        "description": "Look up the carrier status of an order.",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "order_id": {"type": "string", "description": "The order number"}
                            },
                            "required": ["order_id"],
                        },
                    },
                }
            ],
            "temperature": 0.2,
            "max_tokens": 300,
            "user": "u-123",
            "stream": True,
        }
    ).encode()


def bench_keys() -> None:
    body = chat_body()
    print(f"cache_key: chat body of {len(body)} bytes")

    def baseline() -> str:
        canon = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(canon, digest_size=16).hexdigest()

    t = compare(
        {
            "rust": lambda: rust.cache_key(body, "proj"),
            "twin": lambda: twin.cache_key(body, "proj"),
            "base": baseline,
            "ctx_rust": lambda: rust.context_key(body, "proj"),
            "ctx_twin": lambda: twin.context_key(body, "proj"),
        }
    )
    name = f"cache_key ({len(body)} B chat body)"
    row(name, "rust _core", fmt_time(t["rust"]), f"{t['twin'] / t['rust']:.1f}x twin")
    row(name, "python twin", fmt_time(t["twin"]))
    row(
        name,
        "orjson sort_keys + blake2b",
        fmt_time(t["base"]),
        f"rust is {t['base'] / t['rust']:.2f}x this",
    )
    row(
        "context_key",
        "rust _core",
        fmt_time(t["ctx_rust"]),
        f"{t['ctx_twin'] / t['ctx_rust']:.1f}x twin",
    )


def bench_tokens() -> None:
    import tiktoken  # the package, built offline from the same ranks

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "core"))
    from test_tokens import tiktoken_encoding  # type: ignore[import-not-found]

    with open(__file__, encoding="utf-8") as f:
        ascii_prose = f.read()[:2000]
    assert ascii_prose.isascii()
    # ASCII text takes the extension's hand-compiled split; any other, the regex.
    texts = {"ASCII": ascii_prose, "mixed": ascii_prose + " Überprüfung 東京タワー 😀 " * 10}
    for (kind, prose), enc in itertools.product(texts.items(), ("o200k_base", "cl100k_base")):
        tk = tiktoken_encoding(enc)
        assert isinstance(tk, tiktoken.Encoding)
        expected = len(tk.encode_ordinary(prose))
        assert rust.count_tokens(prose, enc) == expected == twin.count_tokens(prose, enc)
        name = f"count_tokens {enc} ({len(prose)} ch, {kind})"
        t = compare(
            {
                "rust": lambda: rust.count_tokens(prose, enc),  # noqa: B023
                "tiktoken": lambda: len(tk.encode_ordinary(prose)),  # noqa: B023
                "twin": lambda: twin.count_tokens(prose, enc),  # noqa: B023
            },
            rounds=5,
        )
        row(
            name,
            "rust _core",
            fmt_time(t["rust"]),
            f"{expected} tokens; {t['tiktoken'] / t['rust']:.2f}x tiktoken",
        )
        row(name, "tiktoken package (same ranks)", fmt_time(t["tiktoken"]))
        row(name, "python twin (BPE cache warm)", fmt_time(t["twin"]))
    body = chat_body()
    parsed = json.loads(body)  # what the proxy passes: the dict it already parsed
    t = compare(
        {"rust": lambda: rust.count_chat_tokens(body), "twin": lambda: twin.count_chat_tokens(body),
         "rust dict": lambda: rust.count_chat_tokens(parsed)}
    )
    row(
        "count_chat_tokens (chat body)",
        "rust _core",
        fmt_time(t["rust"]),
        f"{t['twin'] / t['rust']:.1f}x twin",
    )
    row("count_chat_tokens (chat body)", "rust _core, the parsed dict", fmt_time(t["rust dict"]),
        f"{t['rust'] / t['rust dict']:.1f}x the body")


def read_bandwidth() -> tuple[float, float]:
    """Single-core read bandwidth in GB/s over 400 MB (beyond the caches): numpy sum
    and single-threaded BLAS sdot. Both are reported; the higher one is the reference."""
    big = np.ones(100_000_000, dtype=np.float32)
    ones = np.ones_like(big)
    t = compare({"sum": big.sum, "dot": lambda: float(np.dot(big, ones))}, min_time=0.5, rounds=3)
    return big.nbytes / t["sum"] / 1e9, 2 * big.nbytes / t["dot"] / 1e9


def bench_topk(n: int) -> None:
    dim, k = 384, 10
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    q = rng.standard_normal(dim).astype(np.float32)
    ix = rust.VectorIndex(dim)
    for i in range(n):
        ix.add("ns", str(i), data[i])
    mb = n * dim * 4 / 1e6
    print(f"top-k: {n} x {dim} float32 = {mb:.0f} MB, k={k}")

    def numpy_topk() -> list[int]:
        scores = data @ q
        top = np.argpartition(-scores, k)[:k]
        return [int(i) for i in top[np.argsort(-scores[top])]]

    got = [int(i) for i, _ in ix.search("ns", q, k, -1.0)]
    assert got == numpy_topk(), "rust top-k disagrees with numpy"
    bw_sum, bw_dot = read_bandwidth()
    bw = max(bw_sum, bw_dot)
    t = compare(
        {"rust": lambda: ix.search("ns", q, k, -1.0), "numpy": numpy_topk}, min_time=0.5, rounds=5
    )
    gbs = mb / 1e3 / t["rust"]
    row("memory bandwidth", "numpy float32 sum, 400 MB", f"{bw_sum:.1f} GB/s", "single core, read")
    row(
        "memory bandwidth",
        "BLAS sdot 2 x 400 MB, 1 thread",
        f"{bw_dot:.1f} GB/s",
        "single core, read",
    )
    name = f"top-{k} of {n // 1000}k x {dim}"
    row(
        name,
        "rust VectorIndex.search",
        fmt_time(t["rust"]),
        f"{gbs:.1f} GB/s = {100 * gbs / bw:.0f}% of bandwidth",
    )
    row(
        name,
        "numpy matmul + argpartition, 1 thread",
        fmt_time(t["numpy"]),
        f"rust is {t['numpy'] / t['rust']:.2f}x this",
    )
    small = 2_000
    tw = twin.VectorIndex(dim)
    for i in range(small):
        tw.add("ns", str(i), data[i])
    t_twin = compare({"twin": lambda: tw.search("ns", q, k, -1.0)}, rounds=2)["twin"] * n / small
    row(f"top-{k} of {n // 1000}k x {dim}", "python twin (extrapolated from 2k)", fmt_time(t_twin))


def event_row(i: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "prompt_call",
        "project_id": "proj_1",
        "timestamp": 1_763_856_000_000 + i,
        "run_id": f"run-{i // 10}",
        "user_id": "user-42",
        "tags": ["prod", "chat", "support"],
        "release": "1.2.3",
        "env": "production",
        "client_hostname": "gateway-1",
        "client_sdk_version": "watchllm/0.1.0",
        "client_platform": "linux",
        "endpoint": "/v1/chat/completions",
        "prompt": ("Summarise this support ticket in two sentences, keep the order id. " * 3)[:200],
        "response": ("The customer reports that order 48213 has not arrived after nine days. " * 6)[
            :400
        ],
        "model": "gpt-4o-mini",
        "provider": "openai",
        "tokens_input": 120 + i % 50,
        "tokens_output": 230,
        "tokens_cached": 0,
        "cost_estimate_usd": 0.000153,
        "cost_saved_usd": 0.0,
        "latency_ms": 812.5,
        "time_to_first_token_ms": 120.25,
        "status": "ok",
        "http_status": 200,
        "cache_status": "MISS",
        "request_id": f"req_{i:08d}",
        "key_id": "key_abc",
        "error_type": "",
        "error_message": "",
        "metadata": {"team": "support", "feature": "summary"},
        "properties": '{"temperature":0.2}',
    }


def gateway_events(n: int) -> list[dict[str, Any]]:
    """prompt_call events as the gateway emits them: made by `ProxyContext.event()`,
    with what is new per request (ids, prompt, response, model parsed from the body,
    timings, counts, cost) a new object per row and the rest shared, as in the proxy."""
    from watchllm.events.usage import Usage
    from watchllm.proxy.context import ProxyContext

    out = []
    for i in range(n):
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": (
            f"Ticket {i}: summarise this support ticket in two sentences, keep the order id. "
            * 3)[:200]}]})
        ctx = ProxyContext(f"req_{uuid.uuid4().hex}", "chat/completions")
        ctx.project_id, ctx.key_id, ctx.provider = "proj_1", "key_abc", "openai"
        ctx.model = orjson.loads(body)["model"]
        ctx.status, ctx.cache_status, ctx.ttft_s = 200, "MISS", 0.12 + i % 7 / 1000
        ctx.usage = Usage(120 + i % 50, 230, 0)
        ctx.cost_usd = ctx.usage.prompt * 1.5e-7 + 230 * 6e-7
        ctx.prompt = body.decode()
        ctx.response = (f"The customer reports that order {48213 + i} has not arrived after "
                        "nine days. " * 6)[:400]
        out.append(ctx.event())
    return out


def bench_rowbinary(n: int) -> None:
    import clickhouse_connect

    cols = list(EVENTS_COLUMNS)
    names = [c for c, _ in cols]
    events = [event_row(i) for i in range(n)]
    assert rust.encode_rowbinary(cols, events[:100]) == twin.encode_rowbinary(cols, events[:100])
    print(f"RowBinary: {n} prompt_call events, {len(cols)} columns")
    t = compare(
        {
            "rust": lambda: rust.encode_rowbinary(cols, events),
            "twin": lambda: twin.encode_rowbinary(cols, events),
        },
        min_time=0.3,
        rounds=3,
    )
    row(
        "encode_rowbinary (events)",
        "rust _core",
        f"{n / t['rust']:,.0f} rows/s",
        f"{t['twin'] / t['rust']:.0f}x twin",
    )
    row("encode_rowbinary (events)", "python twin", f"{n / t['twin']:,.0f} rows/s")
    # The rows above share their constant values (literals), which the extension
    # remembers per column; rows decoded from JSON share nothing but their keys.
    decoded = orjson.loads(orjson.dumps(events))
    assert rust.encode_rowbinary(cols, decoded) == rust.encode_rowbinary(cols, events)
    t_json = compare({"rust": lambda: rust.encode_rowbinary(cols, decoded)}, min_time=0.3, rounds=3)
    row(
        "encode_rowbinary (events)",
        "rust _core, JSON-decoded rows (no shared values)",
        f"{n / t_json['rust']:,.0f} rows/s",
    )
    gateway = gateway_events(n)
    names_sql = ", ".join(names)
    # LowCardinality columns parsed as plain types, converted column-wise by the engine.
    lc = re.compile(r"LowCardinality\((\w+)\)")
    plain = ", ".join(f"`{c}` " + lc.sub(r"\1", t) for c, t in cols)
    with tempfile.TemporaryDirectory(prefix="watchllm-bench-") as path:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        ddl = ", ".join(f"`{c}` {t}" for c, t in cols)
        # Null engine: the server parses every row but stores nothing.
        client.command(f"CREATE TABLE ev ({ddl}) ENGINE = Null")
        matrix = [[e[c] for c in names] for e in events]
        for e in matrix:  # clickhouse-connect wants datetimes for DateTime64 columns
            e[3] = np.datetime64(e[3], "ms").astype(object)
        blob_path = os.path.join(path, "batch.rowbinary")
        matrix_gw = [[e.get(c) for c in names] for e in gateway]
        for e in matrix_gw:
            e[3] = np.datetime64(e[3], "ms").astype(object)
            for j, (_, kind) in enumerate(cols):  # columns the gateway leaves to defaults
                if e[j] is None and not kind.startswith("Nullable"):
                    e[j] = [] if kind.startswith("Array") else {} if kind.startswith("Map") \
                        else ""

        def cc_insert() -> None:
            client.insert("ev", matrix, column_names=names)

        def our_insert() -> None:
            client.raw_insert(
                "ev", names, insert_block=rust.encode_rowbinary(cols, events), fmt="RowBinary"
            )

        def our_insert_plain() -> None:
            with open(blob_path, "wb") as f:
                f.write(rust.encode_rowbinary(cols, events))
            client.command(
                f"INSERT INTO ev ({names_sql}) SELECT * FROM file('{blob_path}', 'RowBinary', "
                f"'{plain.replace(chr(39), chr(39) * 2)}')"
            )

        # The encoder alone, in the same interleaved rounds as the inserts, so the
        # ratio to clickhouse-connect's insert is not skewed by load that changes
        # between separately measured sections.
        t = compare(
            {
                "cc": cc_insert,
                "ours": our_insert,
                "plain": our_insert_plain,
                "encode": lambda: rust.encode_rowbinary(cols, events),
                "encode_json": lambda: rust.encode_rowbinary(cols, decoded),
                "cc_gw": lambda: client.insert("ev", matrix_gw, column_names=names),
                "encode_gw": lambda: rust.encode_rowbinary(cols, gateway),
            },
            min_time=0.5,
            rounds=3,
        )
        for key, rows_are in (("encode", "benchmark rows"), ("encode_json", "JSON-decoded rows")):
            row(
                "encode_rowbinary vs insert",
                f"rust _core, {rows_are}, same rounds as the inserts",
                f"{t[key] / n * 1e6:.2f} µs/row",
                f"{t['cc'] / t[key]:.1f}x faster than clickhouse-connect's insert "
                f"({t['cc'] / n * 1e6:.2f} µs/row)",
            )
        row(
            "encode_rowbinary vs insert",
            "rust _core, gateway events (ProxyContext.event()), same rounds",
            f"{t['encode_gw'] / n * 1e6:.2f} µs/row",
            f"{t['cc_gw'] / t['encode_gw']:.1f}x faster than clickhouse-connect's insert of "
            f"the same rows ({t['cc_gw'] / n * 1e6:.2f} µs/row)",
        )
        name = "insert into chDB, Null engine"
        row(name, "clickhouse-connect client.insert", f"{n / t['cc']:,.0f} rows/s", "Native")
        row(
            name,
            "encode_rowbinary + raw_insert",
            f"{n / t['ours']:,.0f} rows/s",
            f"{t['cc'] / t['ours']:.1f}x clickhouse-connect",
        )
        row(
            name,
            "encode_rowbinary + SELECT FROM file(plain types)",
            f"{n / t['plain']:,.0f} rows/s",
            f"{t['cc'] / t['plain']:.1f}x clickhouse-connect",
        )
        client.close()
    bench_http_client(cols, names, events, matrix)


def bench_http_client(
    cols: list[tuple[str, str]],
    names: list[str],
    events: list[dict[str, Any]],
    matrix: list[list[Any]],
) -> None:
    """Client-side CPU per row of an insert over HTTP, against a stand-in server in
    another process (fake_clickhouse.py), so only this process's work is counted."""
    import socket
    import subprocess

    import clickhouse_connect

    n = len(events)
    types = [t for _, t in cols]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "fake_clickhouse.py"), str(port)]
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        plain = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress=False)
        lz4 = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress="lz4")
        cases: dict[str, Callable[[], Any]] = {
            "cc": lambda: plain.insert("ev", matrix, column_names=names, column_type_names=types),
            "cc_lz4": lambda: lz4.insert("ev", matrix, column_names=names, column_type_names=types),
            "ours": lambda: plain.raw_insert(
                "ev", names, insert_block=rust.encode_rowbinary(cols, events), fmt="RowBinary"
            ),
            # What ClickHouseAnalytics sends: the statement, then the rows, as the body.
            "route": lambda: plain.raw_insert(
                insert_select("ev", cols, input_source(cols), {}).removeprefix("INSERT INTO "),
                None,
                rust.encode_rowbinary(cols, events),
                fmt="RowBinary",
            ),
        }

        def received() -> int:
            answer = plain.command("SELECT bytes_received")
            assert isinstance(answer, list)
            return int(answer[0])

        sent = {}
        for key, fn in cases.items():
            before = received()
            fn()
            sent[key] = (received() - before) / n
        cpu = dict.fromkeys(cases, float("inf"))
        for _ in range(5):  # interleaved; process CPU time, best of 5
            for key, fn in cases.items():
                gc.disable()
                c0 = time.process_time()
                fn()
                cpu[key] = min(cpu[key], time.process_time() - c0)
                gc.enable()
        name = "HTTP insert, client CPU/row"
        for key, label in (
            ("cc", "clickhouse-connect insert (Native)"),
            ("cc_lz4", "clickhouse-connect insert, lz4"),
        ):
            row(name, label, f"{cpu[key] / n * 1e6:.2f} µs", f"{sent[key]:.0f} B/row sent")
        row(
            name,
            "encode_rowbinary + raw_insert",
            f"{cpu['ours'] / n * 1e6:.2f} µs",
            f"{sent['ours']:.0f} B/row sent; {cpu['cc'] / cpu['ours']:.1f}x less CPU than "
            f"clickhouse-connect ({cpu['cc_lz4'] / cpu['ours']:.1f}x vs lz4)",
        )
        row(
            name,
            "encode_rowbinary + INSERT ... SELECT FROM input() (the pipeline's route)",
            f"{cpu['route'] / n * 1e6:.2f} µs",
            f"{sent['route']:.0f} B/row sent; {cpu['cc'] / cpu['route']:.1f}x less CPU than "
            f"clickhouse-connect ({cpu['cc_lz4'] / cpu['route']:.1f}x vs lz4)",
        )
        plain.close()
        lz4.close()
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--only", choices=["keys", "tokens", "topk", "rowbinary"])
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, numpy {np.__version__}")
    run = {
        "keys": bench_keys,
        "tokens": bench_tokens,
        "topk": lambda: bench_topk(10_000 if args.quick else 100_000),
        "rowbinary": lambda: bench_rowbinary(2_000 if args.quick else 20_000),
    }
    for name, fn in run.items():
        if args.only in (None, name):
            fn()
    print("\n| benchmark | implementation | result | note |\n| --- | --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
