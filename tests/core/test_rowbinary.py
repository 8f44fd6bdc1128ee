"""RowBinary: twin bytes == extension bytes, errors name the row and column, and
chDB (the real ClickHouse engine) reads the bytes back into the same values."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchllm.events.schema import EVENTS_COLUMNS

ALL_TYPES: list[tuple[str, str]] = [
    ("s", "String"),
    ("fs", "FixedString(4)"),
    ("lc", "LowCardinality(String)"),
    ("ns", "Nullable(String)"),
    ("arr", "Array(LowCardinality(String))"),
    ("arr_n", "Array(Nullable(Int32))"),
    ("m", "Map(String, String)"),
    ("m_i", "Map(LowCardinality(String), Array(UInt8))"),
    ("e8", "Enum8('a' = 1, 'b' = 2, 'it''s' = -3)"),
    ("e16", "Enum16('x' = 1000, 'y' = -1000)"),
    ("ts", "DateTime64(3, 'UTC')"),
    ("ts6", "DateTime64(6)"),
    ("d", "DateTime('UTC')"),
    ("day", "Date"),
    ("u8", "UInt8"),
    ("u16", "UInt16"),
    ("u32", "UInt32"),
    ("u64", "UInt64"),
    ("i8", "Int8"),
    ("i16", "Int16"),
    ("i32", "Int32"),
    ("i64", "Int64"),
    ("f32", "Float32"),
    ("f64", "Float64"),
    ("nf32", "Nullable(Float32)"),
    ("b", "Bool"),
    ("id", "UUID"),
]
REQUIRED = {"e8", "e16", "ts", "ts6", "d", "day", "id"}


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.integers(lo, hi)


strings = st.text(max_size=12)
value_strategies: dict[str, st.SearchStrategy[Any]] = {
    "s": strings | st.binary(max_size=5),
    "fs": st.text(alphabet="abcé", max_size=2),
    "lc": strings,
    "ns": st.none() | strings,
    "arr": st.lists(strings, max_size=3) | st.tuples(strings),
    "arr_n": st.lists(st.none() | ints(32, True), max_size=3),
    "m": st.dictionaries(strings, strings, max_size=3),
    "m_i": st.dictionaries(strings, st.lists(ints(8, False), max_size=2), max_size=2),
    "e8": st.sampled_from(["a", "b", "it's"]),
    "e16": st.sampled_from(["x", "y"]),
    "ts": st.integers(0, 2**41)
    | st.datetimes(min_value=dt.datetime(1970, 1, 2), timezones=st.sampled_from([None, dt.UTC])),
    "ts6": st.integers(-(2**50), 2**50),
    "d": st.integers(0, 2**32 - 1),
    "day": st.integers(0, 40000)
    | st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(2149, 6, 6)),
    "u8": ints(8, False),
    "u16": ints(16, False),
    "u32": ints(32, False),
    "u64": ints(64, False),
    "i8": ints(8, True),
    "i16": ints(16, True),
    "i32": ints(32, True),
    "i64": ints(64, True),
    "f32": st.floats(width=32) | st.integers(-(2**40), 2**40),
    "f64": st.floats(),
    "nf32": st.none() | st.floats(width=32),
    "b": st.booleans(),
    "id": st.uuids() | st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper()),
}


@st.composite
def rows(draw: st.DrawFn, valid: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, _ in ALL_TYPES:
        if name in REQUIRED or draw(st.booleans()):
            row[name] = draw(value_strategies[name])
    if not valid:
        name = draw(st.sampled_from([n for n, _ in ALL_TYPES]))
        row[name] = draw(
            st.sampled_from(
                [
                    None,
                    1.5,
                    "x",
                    b"y",
                    -1,
                    2**64,
                    2**70,
                    [1],
                    {"k": 1},
                    True,
                    math.nan,
                    1e300,
                    "\ud800",
                ]
            )
        )
    return row


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(rows(), max_size=5))
def test_twin_bytes_equal_rust_bytes(
    rust: ModuleType, twin: ModuleType, batch: list[dict[str, Any]]
) -> None:
    assert twin.encode_rowbinary(ALL_TYPES, batch) == rust.encode_rowbinary(ALL_TYPES, batch)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(rows(valid=False), min_size=1, max_size=3))
def test_twin_and_rust_fail_alike(
    rust: ModuleType, twin: ModuleType, batch: list[dict[str, Any]]
) -> None:
    outcomes = []
    for mod in (rust, twin):
        try:
            outcomes.append(mod.encode_rowbinary(ALL_TYPES, batch))
        except mod.RowBinaryError as e:
            assert isinstance(e, mod.CoreError)
            assert f"row {e.row}, column '{e.column}'" in str(e)
            outcomes.append((e.row, e.column))
    assert outcomes[0] == outcomes[1]


def test_rows_of_any_key_order_and_key_objects(rust: ModuleType, twin: ModuleType) -> None:
    """The extension finds columns by walking each dict in insertion order and
    remembering the key objects it saw; rows whose keys differ in order, identity
    (JSON-decoded, built at run time), extras or repeats must encode like `dict.get`."""
    import orjson

    cols = [("a", "String"), ("n", "UInt8"), ("m", "Map(String, String)"), ("a", "String")]
    cols += [("z", "Nullable(Int32)")]

    class Sub(dict[str, Any]):
        pass

    base = {"a": "x", "n": 7, "m": {"k": "v"}, "z": -1}
    batch: list[dict[Any, Any]] = [
        base,
        {"z": None, "m": {}, "n": 1, "a": "y"},  # reversed
        orjson.loads(orjson.dumps(base)),  # keys not interned
        {"".join(["a"]): "built", "extra": 1, 5: "int key", b"n": 3},  # no n, odd keys
        {},
        Sub(base),
        dict(base, a="changed"),
        {"n": 2},
        base,
    ]
    want = twin.encode_rowbinary(cols, batch)
    assert rust.encode_rowbinary(cols, batch) == want
    assert rust.encode_rowbinary(cols, batch[::-1]) == twin.encode_rowbinary(cols, batch[::-1])
    one_by_one = b"".join(rust.encode_rowbinary(cols, [row]) for row in batch)
    assert one_by_one == want


@pytest.mark.parametrize("backend", ["rust", "twin"])
def test_errors_name_row_and_column(backend: str, rust: ModuleType, twin: ModuleType) -> None:
    mod = rust if backend == "rust" else twin
    cols = [("a", "String"), ("n", "UInt8"), ("e", "Enum8('x' = 1)")]
    good = {"a": "ok", "n": 1, "e": "x"}
    cases = [
        ({"a": 1, "e": "x"}, "a"),
        ({"n": 256, "e": "x"}, "n"),
        ({"e": "nope"}, "e"),
        ({"a": "x"}, "e"),
    ]
    for bad, column in cases:
        with pytest.raises(mod.RowBinaryError) as info:
            mod.encode_rowbinary(cols, [good, good, bad])
        assert (info.value.row, info.value.column) == (2, column)
        assert f"row 2, column '{column}'" in str(info.value)
    with pytest.raises(mod.RowBinaryError) as info:
        mod.encode_rowbinary(cols, [good, ["not", "a", "dict"]])
    assert info.value.row == 1
    with pytest.raises(mod.CoreError):
        mod.encode_rowbinary([("a", "Decimal(10, 2)")], [])


def ddl(table: str, columns: list[tuple[str, str]]) -> str:
    cols = ", ".join(f"`{n}` {t}" for n, t in columns)
    return f"CREATE TABLE {table} ({cols}) ENGINE = Memory"


@pytest.mark.parametrize("backend", ["rust", "twin"])
def test_chdb_reads_back_all_types(
    backend: str, rust: ModuleType, twin: ModuleType, chdb_client: Any
) -> None:
    mod = rust if backend == "rust" else twin
    table = f"rb_all_{backend}"
    chdb_client.command(f"DROP TABLE IF EXISTS {table}")
    chdb_client.command(ddl(table, ALL_TYPES))
    u = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    full = {
        "s": "héllo\n\0",
        "fs": "ab",
        "lc": "lc",
        "ns": "n",
        "arr": ["x", "y"],
        "arr_n": [1, None, -5],
        "m": {"k": "v", "é": ""},
        "m_i": {"a": [1, 2]},
        "e8": "it's",
        "e16": "y",
        "ts": 1_700_000_000_123,
        "ts6": -1_500_000,
        "d": 4_000_000_000,
        "day": dt.date(2024, 2, 29),
        "u8": 255,
        "u16": 65535,
        "u32": 2**32 - 1,
        "u64": 2**64 - 1,
        "i8": -128,
        "i16": -32768,
        "i32": -(2**31),
        "i64": -(2**63),
        "f32": 1.5,
        "f64": -0.1,
        "nf32": None,
        "b": True,
        "id": u,
    }
    sparse = {
        "e8": "a",
        "e16": "x",
        "ts": dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        "ts6": dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        "d": 0,
        "day": 0,
        "id": str(u).upper(),
    }
    data = mod.encode_rowbinary(ALL_TYPES, [full, sparse])
    chdb_client.raw_insert(table, [n for n, _ in ALL_TYPES], insert_block=data, fmt="RowBinary")
    got = chdb_client.query(f"SELECT * FROM {table}").result_rows
    assert len(got) == 2
    row_full, row_sparse = (dict(zip([n for n, _ in ALL_TYPES], r, strict=True)) for r in got)
    expected_full: dict[str, Any] = dict(full)
    expected_full.update(
        fs=b"ab\0\0",
        ts=dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC),
        ts6=dt.datetime(1969, 12, 31, 23, 59, 58, 500000),
        d=dt.datetime(2096, 10, 2, 7, 6, 40, tzinfo=dt.UTC),
        f64=-0.1,
    )
    for k, v in expected_full.items():
        actual = row_full[k]
        if isinstance(actual, str) and isinstance(v, bytes):
            actual = actual.encode()
        if isinstance(actual, dt.datetime) and actual.tzinfo is None and v.tzinfo is not None:
            actual = actual.replace(tzinfo=dt.UTC)
        if k == "fs" and isinstance(actual, str):
            actual = actual.encode()
        assert actual == v, k
    assert (
        row_sparse["s"] == ""
        and row_sparse["ns"] is None
        and row_sparse["arr"] == []
        and row_sparse["m"] == {}
    )
    assert row_sparse["u64"] == 0 and row_sparse["b"] is False and row_sparse["f32"] == 0.0
    assert row_sparse["ts"].replace(tzinfo=dt.UTC) == dt.datetime(
        2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC
    )
    assert row_sparse["ts6"].replace(tzinfo=None) == dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert row_sparse["id"] == u and row_sparse["day"] == dt.date(1970, 1, 1)


def event_row(i: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.UUID(int=i)),
        "event_type": "prompt_call",
        "project_id": "proj_1",
        "timestamp": 1_763_856_000_000 + i,
        "run_id": f"run-{i // 10}",
        "user_id": "user-42",
        "tags": ["prod", "chat"],
        "release": "1.2.3",
        "env": "production",
        "client_hostname": "gateway-1",
        "client_sdk_version": "watchllm/0.1.0",
        "client_platform": "linux",
        "endpoint": "/v1/chat/completions",
        "prompt": "Summarise the following support ticket in two sentences. " * 4,
        "response": "The customer reports intermittent failures when exporting reports. " * 6,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "tokens_input": 120 + i % 50,
        "tokens_output": 230,
        "tokens_cached": 0,
        "cost_estimate_usd": 0.000153,
        "cost_saved_usd": 0.0,
        "latency_ms": 812.5,
        "time_to_first_token_ms": None if i % 2 else 120.25,
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


@pytest.mark.parametrize("backend", ["rust", "twin"])
def test_chdb_reads_back_events(
    backend: str, rust: ModuleType, twin: ModuleType, chdb_client: Any
) -> None:
    mod = rust if backend == "rust" else twin
    table = f"rb_events_{backend}"
    cols = list(EVENTS_COLUMNS)
    chdb_client.command(f"DROP TABLE IF EXISTS {table}")
    chdb_client.command(ddl(table, cols))
    events = [event_row(i) for i in range(100)]
    data = mod.encode_rowbinary(cols, events)
    assert data == (twin if mod is rust else rust).encode_rowbinary(cols, events)
    chdb_client.raw_insert(table, [n for n, _ in cols], insert_block=data, fmt="RowBinary")
    got = chdb_client.query(f"SELECT * FROM {table} ORDER BY timestamp").result_rows
    assert len(got) == 100
    for ev, row in zip(events, got, strict=True):
        back = dict(zip([n for n, _ in cols], row, strict=True))
        for k, v in ev.items():
            if k == "timestamp":
                assert round(back[k].replace(tzinfo=dt.UTC).timestamp() * 1000) == v
            elif k == "latency_ms":
                assert back[k] == pytest.approx(v)
            else:
                assert back[k] == v, k


def test_shared_subclassed_and_mixed_values(rust: ModuleType, twin: ModuleType) -> None:
    """The extension encodes exact str/bytes/int/float/bool/list/tuple/dict values
    directly, remembers a column's last immutable value object and its bytes, and
    hands everything else (subclasses, datetimes, UUID objects, big ints, errors)
    to the generic path; all of them must give the twin's bytes, in any mix."""

    class S(str):
        pass

    class I(int):  # noqa: E742
        pass

    class F(float):
        pass

    class L(list[Any]):
        pass

    cols = [
        ("s", "String"),
        ("e", "Enum8('a' = 1, 'b' = 2)"),
        ("u", "UInt64"),
        ("i", "Int8"),
        ("f", "Float32"),
        ("nf", "Nullable(Float64)"),
        ("ts", "DateTime64(3)"),
        ("arr", "Array(String)"),
        ("m", "Map(String, UInt8)"),
        ("id", "UUID"),
        ("b", "Bool"),
        ("t", "String"),
    ]
    shared = {"s": "same", "e": "a", "u": 7, "i": -3, "f": 1.5, "nf": 2.5, "ts": 10}
    shared |= {"arr": ["x", "y"], "m": {"k": 1}, "id": str(uuid.UUID(int=5)), "b": True}
    shared |= {"t": "é" * 20}
    batch: list[dict[str, Any]] = [shared, dict(shared), shared]
    batch += [
        dict(shared, s=S("sub"), e=S("b"), u=I(8), f=F(0.25), arr=L(["z"]), t=b"raw"),
        dict(shared, u=2**64 - 1, ts=dt.datetime(2024, 1, 2, 3, 4, 5, 6000), nf=None),
        dict(shared, ts=dt.datetime(2024, 1, 2, tzinfo=dt.UTC), id=uuid.UUID(int=9), i=1),
        dict(shared, arr=("t", "u"), m={}, b=False, f=3, nf=4),
        shared,
        {"e": "b", "ts": 0, "id": uuid.UUID(int=1)},
    ]
    batch += [dict(shared, u=n, s=str(n)) for n in range(40)] + [shared] * 3
    want = twin.encode_rowbinary(cols, batch)
    assert rust.encode_rowbinary(cols, batch) == want
    assert b"".join(rust.encode_rowbinary(cols, [row]) for row in batch) == want
    bad_rows: list[tuple[dict[str, Any], str, str | None]] = [
        (dict(shared, i=128), "i", "128 is out of range for Int8"),
        (dict(shared, u=True), "u", "expected int, got bool"),
        (dict(shared, s="\ud800"), "s", None),  # messages differ (twin names the surrogate)
        (dict(shared, arr=["ok", 1]), "arr", "expected str or bytes, got int"),
        (dict(shared, f=1e300), "f", None),  # the float is printed differently
    ]
    for bad, column, reason in bad_rows:
        for mod in (rust, twin):
            with pytest.raises(mod.RowBinaryError) as info:
                mod.encode_rowbinary(cols, [shared, bad])
            assert (info.value.row, info.value.column) == (1, column)
            if reason is not None:
                assert str(info.value) == f"row 1, column '{column}': {reason}"


def test_values_are_kept_while_python_code_runs(rust: ModuleType) -> None:
    """A datetime's tzinfo runs Python code in the middle of a row; if it empties
    the row dict, the row still encodes the values it had (no freed objects read)."""
    row: dict[str, Any] = {}

    class Clearing(dt.tzinfo):
        def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
            row.clear()
            return dt.timedelta(0)

    cols = [("a", "String"), ("ts", "DateTime64(3)"), ("b", "String"), ("c", "Array(String)")]
    values = {"a": "x" * 30, "ts": 0, "b": "y" * 30, "c": ["z" * 30]}
    want = rust.encode_rowbinary(cols, [values])
    row.update(
        a="".join(["x"] * 30),
        ts=dt.datetime(1970, 1, 1, tzinfo=Clearing()),
        b="".join(["y"] * 30),
        c=["".join(["z"] * 30)],
    )
    assert rust.encode_rowbinary(cols, [row]) == want
    assert row == {}
    odd_key = {"\ud800": 1, "a": "x" * 30, "ts": 0, "b": "y" * 30, "c": ["z" * 30]}
    assert rust.encode_rowbinary(cols, [odd_key, odd_key]) == want * 2


def test_keys_rebuilt_per_row(rust: ModuleType, twin: ModuleType) -> None:
    """Each row's keys are new str objects (as when JSON decoding evicts them from
    its key cache): the extension matches them by text at the remembered position,
    and a changed key at that position by lookup."""
    cols = [("a", "String"), ("bb", "UInt8"), ("ccc", "Nullable(Float32)")]

    def key(k: str) -> str:
        return "".join(list(k))  # a new object each time

    batch = [{key("a"): str(i), key("bb"): i, key("ccc"): i / 2} for i in range(30)]
    batch.insert(10, {key("ccc"): 1.0, key("a"): "x", key("bb"): 1})  # moved keys
    batch.insert(20, {key("a"): "y", key("zz"): 5, key("ccc"): None})  # unknown key
    want = twin.encode_rowbinary(cols, batch)
    assert rust.encode_rowbinary(cols, batch) == want
