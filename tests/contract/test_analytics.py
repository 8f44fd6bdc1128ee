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


async def test_a_repeated_dedup_token_is_stored_once_in_table_and_view(analytics: Any) -> None:
    await analytics.command("CREATE TABLE t (id String, n UInt32) ENGINE = MergeTree ORDER BY id "
                            "SETTINGS non_replicated_deduplication_window = 100")
    await analytics.command("CREATE TABLE totals (n SimpleAggregateFunction(sum, UInt64)) "
                            "ENGINE = AggregatingMergeTree ORDER BY tuple() "
                            "SETTINGS non_replicated_deduplication_window = 100")
    await analytics.command("CREATE MATERIALIZED VIEW totals_mv TO totals AS "
                            "SELECT sum(toUInt64(n)) AS n FROM t")
    data = core.encode_rowbinary(COLUMNS[:2], [{"id": f"x{i}", "n": 1} for i in range(10)])
    await analytics.insert_rowbinary("t", ["id", "n"], data, dedup_token="batch-1")
    await analytics.insert_rowbinary("t", ["id", "n"], data, dedup_token="batch-1")  # re-sent
    counted = "SELECT (SELECT count() FROM t) AS rows, (SELECT sum(n) FROM totals) AS view"
    assert await analytics.query(counted) == [{"rows": 10, "view": 10}]
    await analytics.insert_rowbinary("t", ["id", "n"], data, dedup_token="batch-2")  # the token
    assert await analytics.query(counted) == [{"rows": 20, "view": 20}]  # decides, not the data
