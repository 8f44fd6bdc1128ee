"""The insert route: `INSERT ... SELECT * FROM input()/file()` with LowCardinality parsed as
plain types stores exactly what a plain RowBinary insert stores, for every column type, on
both transports (chDB, and HTTP through a stand-in server backed by the same engine), and
deduplication tokens still drop a re-sent batch in the table and the view."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import fresh_clickhouse
from tests.core.test_rowbinary import ALL_TYPES, rows
from tests.pipeline.chdb_http import ChdbHttpServer
from tests.pipeline.helpers import make_event
from watchllm import core
from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.clickhouse_schema import (
    input_source,
    input_structure,
    insert_select,
    plain_type,
)
from watchllm.events.schema import TABLES

COLUMNS = [("i", "UInt32"), *ALL_TYPES]
NAMES = [c for c, _ in COLUMNS]


def test_plain_type_removes_low_cardinality_at_any_depth() -> None:
    assert plain_type("LowCardinality(String)") == "String"
    assert plain_type("LowCardinality(Nullable(String))") == "Nullable(String)"
    assert plain_type("Array(LowCardinality(String))") == "Array(String)"
    assert (plain_type("Map(LowCardinality(String), Array(LowCardinality(String)))")
            == "Map(String, Array(String))")
    assert plain_type("Enum8('LowCardinality(' = 1, 'a)' = 2)") == (
        "Enum8('LowCardinality(' = 1, 'a)' = 2)")
    assert plain_type("DateTime64(3, 'UTC')") == "DateTime64(3, 'UTC')"
    structure = input_structure(TABLES["events"])
    assert "LowCardinality" not in structure and "`tags` Array(String)" in structure
    sql = insert_select("events", TABLES["events"][:2], "input('x')",
                        {"insert_deduplication_token": "it's", "insert_deduplicate": 1})
    assert sql == ("INSERT INTO events (`event_id`, `event_type`) SETTINGS "
                   "insert_deduplication_token = 'it\\'s', insert_deduplicate = 1 "
                   "SELECT * FROM input('x')")


def test_the_http_statement_parses(chdb_url: str) -> None:
    """chDB cannot run `input()` (no request body), but its parser is the server's."""
    import clickhouse_connect

    sql = insert_select("events", TABLES["events"], input_source(TABLES["events"]),
                        {"insert_deduplication_token": "t", "insert_deduplicate": 1})
    client = clickhouse_connect.get_client(dsn=chdb_url)
    try:
        ast = str(client.command(f"EXPLAIN AST {sql}"))
    finally:
        client.close()
    assert "Function input" in ast and "InsertQuery" in ast


@pytest.fixture(scope="module")
def transports(chdb_url: str) -> Iterator[dict[str, Any]]:
    """Per transport: an adapter whose schema has table `routed` (all types), and the
    database holding `routed` and `plain` (the same DDL; filled by plain RowBinary)."""
    database = "t_route_" + secrets.token_hex(4)
    ddl = ", ".join(f"`{c}` {t}" for c, t in COLUMNS)
    server = ChdbHttpServer(chdb_url)

    async def setup(http_url: str) -> dict[str, Any]:
        admin = ClickHouseAnalytics(chdb_url)
        await admin.command(f"CREATE DATABASE {database}")
        for table in ("routed", "plain"):
            await admin.command(f"CREATE TABLE {database}.{table} ({ddl}) "
                                "ENGINE = MergeTree ORDER BY i")
        await admin.close()
        return {"chdb": chdb_url, "http": http_url}

    with server as http_url:
        urls = asyncio.run(setup(http_url))
        yield {"urls": urls, "database": database, "server": server}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(rows(), min_size=1, max_size=20))
@pytest.mark.parametrize("transport", ["chdb", "http"])
def test_every_type_round_trips_exactly(transport: str, transports: dict[str, Any],
                                        chdb_url: str, batch: list[dict[str, Any]]) -> None:
    """Stored values read back as RowBinary: the routed table holds the very bytes that
    were sent, the same as the table filled by a plain RowBinary insert."""
    import clickhouse_connect

    database = transports["database"]
    data = core.encode_rowbinary(COLUMNS, [{**r, "i": n} for n, r in enumerate(batch)])
    client = clickhouse_connect.get_client(dsn=chdb_url, database=database)
    try:
        client.command("TRUNCATE TABLE routed")
        client.command("TRUNCATE TABLE plain")

        async def insert() -> None:
            routed = ClickHouseAnalytics(transports["urls"][transport], database=database,
                                         schema={"routed": COLUMNS})
            try:
                await routed.insert_rowbinary("routed", NAMES, data)
            finally:
                await routed.close()

        asyncio.run(insert())
        client.raw_insert("plain", NAMES, insert_block=data, fmt="RowBinary")
        back = {t: client.raw_query(f"SELECT * FROM {t} ORDER BY i", fmt="RowBinary")
                for t in ("routed", "plain")}
    finally:
        client.close()
    assert back["routed"] == back["plain"] == data
    if transport == "http":
        statement, body = transports["server"].requests[-1]
        assert "FROM input(" in statement and "LowCardinality" not in statement
        assert body == data


@pytest.mark.parametrize("transport", ["chdb", "http"])
async def test_dedup_token_on_the_routed_insert(transport: str, chdb_url: str) -> None:
    ch = await fresh_clickhouse(chdb_url)
    names = [c for c, _ in TABLES["events"]]
    data = core.encode_rowbinary(list(TABLES["events"]), [make_event(i) for i in range(200)])
    with ChdbHttpServer(chdb_url) as http_url:
        url = chdb_url if transport == "chdb" else http_url
        sink = ClickHouseAnalytics(url, database=ch.database)
        try:
            for token in ("wl1:x:1.0+200", "wl1:x:1.0+200", "wl1:x:1.200+200"):
                await sink.insert_rowbinary("events", names, data, dedup_token=token)
        finally:
            await sink.close()
    row = (await ch.query("SELECT (SELECT count() FROM events) AS raw, "
                          "(SELECT sum(requests) FROM usage_hourly) AS view"))[0]
    await ch.command(f"DROP DATABASE {ch.database}")
    await ch.close()
    assert (row["raw"], row["view"]) == (400, 400)  # the repeat dropped in table and view
