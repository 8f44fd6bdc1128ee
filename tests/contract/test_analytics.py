"""Analytics contract: RowBinary inserts and parameterised queries (chDB; a ClickHouse
server goes through the same clickhouse-connect client path)."""

from __future__ import annotations

from typing import Any

import pytest

from watchllm import core

COLUMNS = [("id", "String"), ("n", "UInt32"), ("tags", "Array(String)")]


async def test_insert_rowbinary_then_query(analytics: Any) -> None:
    await analytics.command(
        "CREATE TABLE t (id String, n UInt32, tags Array(String)) ENGINE = MergeTree ORDER BY id")
    rows = [{"id": f"x{i}", "n": i, "tags": ["a"] * (i % 3)} for i in range(100)]
    await analytics.insert_rowbinary("t", [c for c, _ in COLUMNS],
                                     core.encode_rowbinary(COLUMNS, rows))
    got = await analytics.query("SELECT count() AS c, sum(n) AS s FROM t WHERE n >= {lo:UInt32}",
                                {"lo": 50})
    assert got == [{"c": 50, "s": sum(range(50, 100))}]
    got = await analytics.query("SELECT tags FROM t WHERE id = {id:String}", {"id": "x5"})
    assert got == [{"tags": ["a", "a"]}]


async def test_bad_data_is_a_value_error_missing_table_a_connection_error(analytics: Any) -> None:
    await analytics.command("CREATE TABLE t (id String, n UInt32) ENGINE = MergeTree ORDER BY id")
    with pytest.raises(ValueError):  # truncated RowBinary: retrying cannot help
        await analytics.insert_rowbinary("t", ["id", "n"], b"\x05ab")
    with pytest.raises(ConnectionError):  # not there (yet): retry later
        await analytics.insert_rowbinary("missing", ["id", "n"], b"\x01a\x00\x00\x00\x00")
