"""Which column types make chDB's RowBinary parse slow, and the `file()`/`input()`
route that avoids it. Not part of the test suite; docs/core.md records a run.

    .venv/bin/python bench/micro/chdb_parse.py
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import clickhouse_connect
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import event_row

from watchllm import _core as rust
from watchllm.events.schema import EVENTS_COLUMNS

N = 20_000
COLS = list(EVENTS_COLUMNS)
NAMES = [c for c, _ in COLS]
LC = re.compile(r"LowCardinality\((\w+)\)")
VARIANTS = ["as is", "no LowCardinality", "no scalar LowCardinality", "Map as String"]
VARIANTS += ["Enum8 as String", "no Nullable", "Array as String"]


def variant(name: str) -> list[tuple[str, str]]:
    out = []
    for c, t in COLS:
        if name == "no LowCardinality":
            t = LC.sub(r"\1", t)
        elif name == "no scalar LowCardinality" and t.startswith("LowCardinality"):
            t = t[15:-1]
        elif (name == "Map as String" and t.startswith("Map")) or (
            name == "Enum8 as String" and t.startswith("Enum8")
        ):
            t = "String"
        elif name == "no Nullable" and t.startswith("Nullable"):
            t = t[9:-1]
        elif name == "Array as String" and t.startswith("Array"):
            t = "String"
        out.append((c, t))
    return out


def rows_for(cols: list[tuple[str, str]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    types = dict(cols)
    out = []
    for e in events:
        e = dict(e)
        if types["metadata"] == "String":
            e["metadata"] = orjson.dumps(e["metadata"]).decode()
        if types["tags"] == "String":
            e["tags"] = ",".join(e["tags"])
        out.append(e)
    return out


def best(fns: dict[str, Callable[[], Any]], rounds: int = 5) -> dict[str, float]:
    """Best µs per row of each, interleaved."""
    t = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for k, fn in fns.items():
            gc.disable()
            t0 = time.perf_counter()
            fn()
            t[k] = min(t[k], time.perf_counter() - t0)
            gc.enable()
    return {k: v / N * 1e6 for k, v in t.items()}


def insert(client: Any, table: str, names: list[str], blob: bytes) -> Callable[[], Any]:
    return lambda: client.raw_insert(table, names, insert_block=blob, fmt="RowBinary")


def main() -> None:
    events = [event_row(i) for i in range(N)]
    plain = ", ".join(f"`{c}` " + LC.sub(r"\1", t) for c, t in COLS).replace("'", "''")
    with tempfile.TemporaryDirectory(prefix="watchllm-chdb-") as path:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        fns: dict[str, Callable[[], Any]] = {}
        for i, v in enumerate(VARIANTS):
            cols = variant(v)
            client.command(
                f"CREATE TABLE v{i} ({', '.join(f'`{c}` {t}' for c, t in cols)}) ENGINE = Null"
            )
            blob = rust.encode_rowbinary(cols, rows_for(cols, events))
            fns[v] = insert(client, f"v{i}", NAMES, blob)
        print("| schema variant (Null table, raw_insert RowBinary) | µs/row |\n| --- | --- |")
        for k, us in best(fns).items():
            print(f"| {k} | {us:.2f} |")
        singles: dict[str, Callable[[], Any]] = {}
        for c, t in COLS:
            client.command(f"CREATE TABLE s_{c} (`{c}` {t}) ENGINE = Null")
            blob = rust.encode_rowbinary([(c, t)], events)
            singles[f"{c} {t[:40]}"] = insert(client, f"s_{c}", [c], blob)
        print("\n| single column | µs/row |\n| --- | --- |")
        for k, us in best(singles, rounds=3).items():
            print(f"| {k} | {us:.2f} |")
        ddl = ", ".join(f"`{c}` {t}" for c, t in COLS)
        client.command(f"CREATE TABLE ev ({ddl}) ENGINE = Null")
        order = "ENGINE = MergeTree ORDER BY (project_id, timestamp)"
        client.command(f"CREATE TABLE mt ({ddl}) {order}")
        plain_ddl = ", ".join(f"`{c}` " + LC.sub(r"\1", t) for c, t in COLS)
        client.command(f"CREATE TABLE mtp ({plain_ddl}) {order}")
        body = rust.encode_rowbinary(COLS, events)
        f = os.path.join(path, "batch.rowbinary")
        with open(f, "wb") as out:
            out.write(body)

        def direct(t: str) -> Callable[[], Any]:
            return lambda: client.raw_insert(t, NAMES, insert_block=body, fmt="RowBinary")

        def via_file(t: str) -> Callable[[], Any]:
            return lambda: client.command(
                f"INSERT INTO {t} SELECT * FROM file('{f}', 'RowBinary', '{plain}')"
            )

        routes = {
            "Null: raw_insert RowBinary": direct("ev"),
            "Null: SELECT FROM file(plain types)": via_file("ev"),
            "MergeTree: raw_insert RowBinary": direct("mt"),
            "MergeTree: SELECT FROM file(plain types)": via_file("mt"),
            "MergeTree without LowCardinality: raw_insert": direct("mtp"),
        }
        print("\n| insert route | µs/row |\n| --- | --- |")
        for k, us in best(routes).items():
            print(f"| {k} | {us:.2f} |")
        client.command("TRUNCATE TABLE mt")
        direct("mt")()
        a = client.query("SELECT * FROM mt ORDER BY request_id").result_rows
        client.command("TRUNCATE TABLE mt")
        via_file("mt")()
        b = client.query("SELECT * FROM mt ORDER BY request_id").result_rows
        print(f"\nsame rows read back both ways: {a == b}")
        client.close()


if __name__ == "__main__":
    main()
