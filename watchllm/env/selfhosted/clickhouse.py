"""Analytics on clickhouse-connect: one client path for a ClickHouse server (`http(s)://`)
and the embedded engine (`chdb://path`).

clickhouse-connect is synchronous (and chDB has no async client), so inserts run on one
dedicated thread and queries on another: the event loop never waits on ClickHouse, and a
slow analytics query never holds up ingestion.

chDB allows one data directory per process (a second path fails deep in the engine), so
`chdb_path()` records the first one this process opened and refuses another with a clear
message; clients on that path share the engine. Tests use `chdb_path()` to reuse it.

Inserts of the tables in the schema (`watchllm/events/schema.py`) go the
`INSERT ... SELECT * FROM input()/file()` route (`clickhouse_schema.insert_select`): the
same statement on both transports, built from the schema, with LowCardinality columns
parsed as plain types (the engine's row-by-row LowCardinality parse was most of chDB's
insert cost). Over HTTP the rows follow the statement in the body (`input()`); chDB runs in this
process, so the rows go to a file it reads (`file()`; clickhouse-connect's own chDB
insert writes a temporary file too). Other tables are inserted with plain RowBinary.

Errors: `InsertRejected` (a ValueError: ClickHouse refused the data itself; retrying the
same rows cannot help) and `AnalyticsUnavailable` (a ConnectionError: down, unreachable,
table missing; retry later). The event pipeline relies on that split.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from watchllm.env.base import Row
from watchllm.events.clickhouse_schema import file_source, input_source, insert_select
from watchllm.events.schema import TABLES
from watchllm.scheduling import background_priority

T = TypeVar("T")
# ClickHouse error codes that mean "this data is bad", not "the server is unwell".
_DATA_ERRORS = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 349, 469}
_CODE = re.compile(r"Code: (\d+)")
_process_chdb: list[str] = []
_anchor: list[Any] = []
_chdb_lock = threading.Lock()


class InsertRejected(ValueError):
    """ClickHouse rejected the rows themselves (parse error, constraint)."""


class AnalyticsUnavailable(ConnectionError):
    """ClickHouse could not take the request now (down, unreachable, table missing)."""


def chdb_path(path: str | os.PathLike[str] | None = None) -> str:
    """The chDB data directory of this process: `path` if none is open yet (a temporary
    directory when `path` is None), the open one when `path` is None or the same."""
    with _chdb_lock:
        if not _process_chdb:
            wanted = str(path) if path is not None else tempfile.mkdtemp(prefix="watchllm-chdb-")
            os.makedirs(wanted, exist_ok=True)
            _process_chdb.append(os.path.realpath(wanted))
        current = _process_chdb[0]
        if path is not None and os.path.realpath(path) != current:
            raise AnalyticsUnavailable(
                f"chDB is already open at {current} in this process and allows one data "
                f"directory per process; cannot also open {os.path.realpath(path)}"
            )
        return current


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return url


def open_client(url: str, database: str | None = None) -> Any:
    """A clickhouse-connect client for `http(s)://user:pass@host:port/db` or `chdb://path`."""
    import clickhouse_connect

    try:
        if url.startswith("chdb://"):
            path = chdb_path(url.removeprefix("chdb://") or None)
            with _chdb_lock:
                if not _anchor:  # keeps the engine open while adapters come and go
                    _anchor.append(clickhouse_connect.get_client(dsn=f"chdb://{path}"))
            return clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database)
        if database:
            return clickhouse_connect.get_client(dsn=url, database=database)
        return clickhouse_connect.get_client(dsn=url)
    except AnalyticsUnavailable:
        raise
    except Exception as e:
        raise AnalyticsUnavailable(f"ClickHouse at {_redact(url)} is unavailable: {e}") from e


def _classify(e: Exception, what: str) -> Exception:
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError

    message = str(e).strip().splitlines()[0][:500] if str(e).strip() else type(e).__name__
    code = _CODE.search(str(e))
    if isinstance(e, DataError) or (
        isinstance(e, DatabaseError) and code and int(code.group(1)) in _DATA_ERRORS
    ):
        return InsertRejected(f"{what}: {message}")
    return AnalyticsUnavailable(f"{what}: {message}")


def dedup_settings(token: str) -> dict[str, Any]:
    """Insert settings that make a repeated insert with `token` a no-op, in the table
    (which needs `non_replicated_deduplication_window`, see clickhouse_schema.py) and in
    every materialized view fed from it (explicit: the default differs across versions)."""
    return {"insert_deduplicate": 1, "insert_deduplication_token": token,
            "deduplicate_blocks_in_dependent_materialized_views": 1}


class ClickHouseAnalytics:
    """The Analytics seam. `url` is `http(s)://...` or `chdb://path`."""

    # Duplicates of a retried batch collapse at merge time (ReplacingMergeTree); sorting
    # them out inside each insert as well costs ~30% of chDB's insert throughput.
    INSERT_SETTINGS: Mapping[str, Any] = {"optimize_on_insert": 0}

    def __init__(self, url: str, database: str | None = None,
                 schema: Mapping[str, Sequence[tuple[str, str]]] = TABLES,
                 idle: bool = False, ttl_days: int = 0) -> None:
        """`idle`: run the insert and query threads under SCHED_IDLE, so inserts (and
        with chDB, the engine in this process and its merges) never delay a request on a
        busy core (`WATCHLLM_ANALYTICS_IDLE`, watchllm/scheduling.py). chDB starts from
        these two threads, so its own pools inherit the policy. `ttl_days`: the raw
        events' TTL, which `repair_after_replay` stays clear of."""
        self.url = url
        self.ttl_days = ttl_days
        self.database = database
        self.schema = schema  # tables inserted through input()/file() with plain types
        self._chdb = url.startswith("chdb://")
        self._spill: str | None = None  # chDB: the file the insert thread hands rows in
        init = background_priority if idle else None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="watchllm-ch-insert",
                                          initializer=init)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="watchllm-ch-query",
                                          initializer=init)
        self._clients: dict[str, Any] = {}  # one client per thread ("insert", "query")

    def _client(self, role: str) -> Any:
        client = self._clients.get(role)
        if client is None:
            client = self._clients[role] = open_client(self.url, self.database)
        return client

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    # After the pipeline replays the batch in flight at a crash of this process. With chDB,
    # the crash could stop ClickHouse itself between a table recording a block's
    # deduplication token and keeping the block, and the replay is then dropped as a
    # duplicate: `lost_events` finds what the raw table lacks (the pipeline re-inserts it),
    # `repair_after_replay` rebuilds the view's hours that disagree with the raw events. A
    # ClickHouse server finishes its inserts whatever happens to us: nothing to check.
    async def lost_events(self, event_ids: Sequence[str],
                          span_ms: tuple[int, int] | None = None) -> set[str]:
        """Which of `event_ids` are not in `events` (chDB; empty for a server). `span_ms`:
        their first and last timestamp (epoch ms), so only those partitions are read."""
        if not self._chdb or not event_ids:
            return set()
        window = ""
        if span_ms is not None:
            window = (f" AND timestamp >= fromUnixTimestamp64Milli(toInt64({int(span_ms[0])}))"
                      f" AND timestamp <= fromUnixTimestamp64Milli(toInt64({int(span_ms[1])}))")
        found: set[str] = set()
        for at in range(0, len(event_ids), 5000):
            rows = await self.query(
                "SELECT groupUniqArray(event_id) AS ids FROM events "
                "WHERE event_id IN {ids:Array(String)}" + window,
                {"ids": list(event_ids[at:at + 5000])})
            found.update(rows[0]["ids"])
        return set(event_ids) - found

    async def repair_after_replay(self, hours: set[int]) -> list[int]:
        """The hours (epoch s) of `hours` whose `usage_hourly` disagreed with the raw
        events, rebuilt (chDB; none for a server)."""
        if not self._chdb:
            return []
        from watchllm.events.usage_rebuild import repair_hours

        return await repair_hours(self, hours, self.ttl_days)

    async def insert_rowbinary(
        self, table: str, columns: Sequence[str], data: bytes, dedup_token: str | None = None
    ) -> None:
        settings = dict(self.INSERT_SETTINGS)
        if dedup_token is not None:
            settings.update(dedup_settings(dedup_token))

        typed = self._typed(table, columns)

        def insert() -> None:
            try:
                client = self._client("insert")
                if typed is None:
                    client.raw_insert(table, list(columns), data, settings=settings,
                                      fmt="RowBinary")
                elif self._chdb:
                    path = self._spill_file(data)
                    try:
                        client.command(insert_select(table, typed, file_source(path, typed),
                                                     settings))
                    finally:
                        os.unlink(path)
                else:
                    # raw_insert sends "INSERT INTO <this> FORMAT RowBinary\n" + rows: our
                    # statement. (command(sql, data=rows) would also work, but it decodes
                    # the whole body looking for a read-only query: 2 µs per row.)
                    sql = insert_select(table, typed, input_source(typed), settings)
                    client.raw_insert(sql.removeprefix("INSERT INTO "), None, data,
                                      fmt="RowBinary")
            except AnalyticsUnavailable:
                raise
            except Exception as e:
                if _broken(e):
                    self._clients.pop("insert", None)
                raise _classify(e, f"insert into {table}") from e

        await self._run(self._writer, insert)

    def _typed(self, table: str, columns: Sequence[str]) -> list[tuple[str, str]] | None:
        """The (name, type) of `columns` if `table` is in the schema, else None."""
        known = self.schema.get(table)
        if known is None:
            return None
        types = dict(known)
        try:
            return [(c, types[c]) for c in columns]
        except KeyError:
            return None

    def _spill_file(self, data: bytes) -> str:
        """Write `data` to this adapter's insert file (one at a time: one insert thread),
        in a private directory; the caller removes the file after the insert."""
        if self._spill is None:
            self._spill = os.path.join(tempfile.mkdtemp(prefix="watchllm-insert-"), "rows.bin")
        fd = os.open(self._spill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return self._spill

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        def run() -> list[Row]:
            try:
                result = self._client("query").query(sql, parameters=dict(params or {}))
            except AnalyticsUnavailable:
                raise
            except Exception as e:
                raise _classify(e, "query") from e
            return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]

        return await self._run(self._reader, run)

    async def command(self, sql: str, settings: Mapping[str, Any] | None = None) -> None:
        """A DDL or other statement without a result (schema migrations)."""

        def run() -> None:
            try:
                self._client("query").command(sql, settings=dict(settings or {}))
            except AnalyticsUnavailable:
                raise
            except Exception as e:
                raise _classify(e, "command") from e

        await self._run(self._reader, run)

    async def ping(self) -> None:
        await self.query("SELECT 1")

    async def close(self) -> None:
        def close_all() -> None:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

        await self._run(self._reader, close_all)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        if self._spill is not None:
            shutil.rmtree(os.path.dirname(self._spill), ignore_errors=True)


def _broken(e: Exception) -> bool:
    """A connection-level failure after which a fresh client is the safe choice."""
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(e, (OperationalError, OSError))
