"""Twin of `rust_core/src/rowbinary.rs`: ClickHouse RowBinary in pure Python."""

from __future__ import annotations

import datetime as _dt
import struct
import uuid as _uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ._errors import CoreError, RowBinaryError
from ._rb_types import Type, parse_type

_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_pack_f = struct.Struct("<f").pack
_pack_d = struct.Struct("<d").pack
_HEX = frozenset("0123456789abcdefABCDEF")


class _Fail(Exception):
    pass


def _utf8(v: str) -> bytes:
    try:
        return v.encode("utf-8")
    except UnicodeEncodeError:
        raise _Fail("str is not valid UTF-8 (lone surrogate)") from None


def _tname(v: Any) -> str:
    return type(v).__name__


def _expected(what: str, v: Any) -> _Fail:
    return _Fail(f"expected {what}, got {_tname(v)}")


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _int_of(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if not -(2**63) <= v < 2**64:
            raise _Fail("integer is out of range")
        return v
    raise _expected("int", v)


def _float_of(v: Any) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        if not -(2**63) <= v < 2**64:
            raise _Fail("integer is out of range for a float")
        return float(v)
    raise _expected("float or int", v)


def _micros(v: _dt.datetime) -> int:
    days = v.toordinal() - _EPOCH_ORDINAL
    us = ((days * 86400 + v.hour * 3600 + v.minute * 60 + v.second) * 1_000_000) + v.microsecond
    off = v.utcoffset()
    if off is not None:
        us -= (off.days * 86400 + off.seconds) * 1_000_000 + off.microseconds
    return us


def parse_uuid(s: str) -> int | None:
    if len(s) == 36 and all(s[i] == "-" for i in (8, 13, 18, 23)):
        s = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
    if len(s) != 32 or not _HEX.issuperset(s):
        return None
    return int(s, 16)


def _zero(ty: Type, out: bytearray) -> None:
    k = ty.kind
    if k == "Nullable":
        out.append(1)
    elif k in ("String", "Array", "Map", "Bool"):
        out.append(0)
    elif k == "FixedString" or k == "Int":
        out += bytes(ty.args[0])  # type: ignore[call-overload]
    elif k == "Float32":
        out += b"\0" * 4
    elif k == "Float64":
        out += b"\0" * 8
    else:
        raise _Fail(f"a value is required for {ty.name}")


def _encode(ty: Type, v: Any, out: bytearray) -> None:
    if v is None:
        _zero(ty, out)
        return
    k, args = ty.kind, ty.args
    if k == "Nullable":
        out.append(0)
        _encode(args[0], v, out)  # type: ignore[arg-type]
    elif k == "String":
        if isinstance(v, str):
            b = _utf8(v)
        elif isinstance(v, (bytes, bytearray)):
            b = bytes(v)
        else:
            raise _expected("str or bytes", v)
        _varint(len(b), out)
        out += b
    elif k == "FixedString":
        n: int = args[0]  # type: ignore[assignment]
        if isinstance(v, str):
            b = _utf8(v)
        elif isinstance(v, (bytes, bytearray)):
            b = bytes(v)
        else:
            raise _expected("str or bytes", v)
        if len(b) > n:
            raise _Fail(f"{len(b)} bytes do not fit in FixedString({n})")
        out += b + bytes(n - len(b))
    elif k == "Int":
        size, signed = args
        i = _int_of(v)
        bits = size * 8  # type: ignore[operator]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= i <= hi:
            raise _Fail(f"{i} is out of range for {ty.name}")
        out += i.to_bytes(size, "little", signed=bool(signed))  # type: ignore[arg-type]
    elif k == "Float32":
        x = _float_of(v)
        try:
            out += _pack_f(x)
        except OverflowError:
            raise _Fail(f"{x} is out of range for Float32") from None
    elif k == "Float64":
        out += _pack_d(_float_of(v))
    elif k == "Bool":
        if isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, int) and v in (0, 1):
            out.append(v)
        else:
            raise _expected("bool", v)
    elif k == "Array":
        if not isinstance(v, (list, tuple)):
            raise _expected("list or tuple", v)
        _varint(len(v), out)
        for x in v:
            _encode(args[0], x, out)  # type: ignore[arg-type]
    elif k == "Map":
        if not isinstance(v, dict):
            raise _expected("dict", v)
        _varint(len(v), out)
        for a, b2 in v.items():
            _encode(args[0], a, out)  # type: ignore[arg-type]
            _encode(args[1], b2, out)  # type: ignore[arg-type]
    elif k == "Enum":
        wide, table = args
        if not isinstance(v, str):
            raise _expected("str (an enum label)", v)
        value = table.get(v)  # type: ignore[attr-defined]
        if value is None:
            raise _Fail(f"unknown label '{v}' for {ty.name}")
        out += value.to_bytes(2 if wide else 1, "little", signed=True)
    elif k == "Date":
        if isinstance(v, _dt.datetime):
            days = _micros(v) // 86_400_000_000
        elif isinstance(v, _dt.date):
            days = v.toordinal() - _EPOCH_ORDINAL
        else:
            days = _int_or(v, "int (days) or date")
        if not 0 <= days <= 0xFFFF:
            raise _Fail(f"{days} is out of range for Date")
        out += days.to_bytes(2, "little")
    elif k == "DateTime":
        if isinstance(v, _dt.datetime):
            secs = _micros(v) // 1_000_000
        else:
            secs = _int_or(v, "int (seconds) or datetime")
        if not 0 <= secs <= 0xFFFFFFFF:
            raise _Fail(f"{secs} is out of range for DateTime")
        out += secs.to_bytes(4, "little")
    elif k == "DateTime64":
        p: int = args[0]  # type: ignore[assignment]
        if isinstance(v, _dt.datetime):
            us = _micros(v)
            ticks = us // 10 ** (6 - p) if p <= 6 else us * 10 ** (p - 6)
        else:
            ticks = _int_or(v, "int (ticks) or datetime")
        if not -(2**63) <= ticks < 2**63:
            raise _Fail(f"{ticks} is out of range for {ty.name}")
        out += ticks.to_bytes(8, "little", signed=True)
    else:  # UUID
        if isinstance(v, _uuid.UUID):
            u = v.int
        elif isinstance(v, str):
            parsed = parse_uuid(v)
            if parsed is None:
                raise _Fail(f"'{v}' is not a UUID")
            u = parsed
        else:
            raise _expected("str or uuid.UUID", v)
        out += (u >> 64).to_bytes(8, "little") + (u & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def _int_or(v: Any, what: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return _int_of(v)
    raise _expected(what, v)


def encode_rowbinary(columns: Sequence[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> bytes:
    """RowBinary bytes of `rows` for the schema `columns` (name, ClickHouse type)."""
    types = [(name, parse_type(t)) for name, t in columns]
    out = bytearray()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowBinaryError(f"row {i}: expected dict, got {_tname(row)}", i, "")
        for name, ty in types:
            try:
                _encode(ty, row.get(name), out)
            except _Fail as e:
                raise RowBinaryError(f"row {i}, column '{name}': {e}", i, name) from None
    return bytes(out)


__all__ = ["CoreError", "RowBinaryError", "encode_rowbinary"]
