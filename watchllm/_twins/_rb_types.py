"""ClickHouse type-string parser for the RowBinary twin (mirrors `rowbinary/types.rs`)."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import CoreError

_INTS = {
    "UInt8": (1, False),
    "UInt16": (2, False),
    "UInt32": (4, False),
    "UInt64": (8, False),
    "Int8": (1, True),
    "Int16": (2, True),
    "Int32": (4, True),
    "Int64": (8, True),
}
_SIMPLE = {"String", "Float32", "Float64", "Bool", "Date", "UUID"}


@dataclass(frozen=True)
class Type:
    """kind: a simple name, "Int", "FixedString", "Nullable", "Array", "Map", "Enum",
    "DateTime", "DateTime64"."""

    kind: str
    args: tuple[object, ...] = ()

    @property
    def name(self) -> str:
        k, a = self.kind, self.args
        if k == "FixedString":
            return f"FixedString({a[0]})"
        if k in ("Nullable", "Array"):
            return f"{k}({a[0].name})"  # type: ignore[attr-defined]
        if k == "Map":
            return f"Map({a[0].name}, {a[1].name})"  # type: ignore[attr-defined]
        if k == "Enum":
            return "Enum16" if a[0] else "Enum8"
        if k == "Int":
            return f"{'' if a[1] else 'U'}Int{int(a[0]) * 8}"  # type: ignore[call-overload]
        if k == "DateTime64":
            return f"DateTime64({a[0]})"
        return k


class _Parser:
    def __init__(self, s: str) -> None:
        self.s, self.i = s.encode("utf-8"), 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in b" \t\n\r\x0c":
            self.i += 1

    def eat(self, c: str) -> None:
        self.ws()
        if self.s[self.i : self.i + 1] != c.encode():
            raise ValueError(f"expected '{c}' at offset {self.i}")
        self.i += 1

    def peek(self) -> bytes:
        self.ws()
        return self.s[self.i : self.i + 1]

    def ident(self) -> str:
        self.ws()
        start = self.i
        while self.i < len(self.s) and (
            chr(self.s[self.i]).isascii()
            and (chr(self.s[self.i]).isalnum() or self.s[self.i] == 95)
        ):
            self.i += 1
        return self.s[start : self.i].decode()

    def int(self) -> int:
        self.ws()
        start = self.i
        if self.s[self.i : self.i + 1] == b"-":
            self.i += 1
        while self.i < len(self.s) and 48 <= self.s[self.i] <= 57:
            self.i += 1
        try:
            value = int(self.s[start : self.i])
        except ValueError:
            raise ValueError(f"expected an integer at offset {start}") from None
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"expected an integer at offset {start}")
        return value

    def quoted(self) -> str:
        self.eat("'")
        out = bytearray()
        while True:
            if self.i >= len(self.s):
                raise ValueError("unterminated string")
            c = self.s[self.i]
            if c == 39 and self.s[self.i + 1 : self.i + 2] == b"'":  # '' is a quote
                out.append(39)
                self.i += 2
            elif c == 39:  # '
                self.i += 1
                break
            elif c == 92:  # backslash
                if self.i + 1 >= len(self.s):
                    raise ValueError("unterminated string")
                out.append(self.s[self.i + 1])
                self.i += 2
            else:
                out.append(c)
                self.i += 1
        return out.decode("utf-8")

    def ty(self) -> Type:
        name = self.ident()
        if name in _SIMPLE:
            return Type(name)
        if name in _INTS:
            return Type("Int", _INTS[name])
        if name == "DateTime":
            if self.peek() == b"(":
                self.eat("(")
                self.quoted()
                self.eat(")")
            return Type("DateTime")
        if name == "DateTime64":
            self.eat("(")
            p = self.int()
            if not 0 <= p <= 9:
                raise ValueError(f"DateTime64 precision {p} is not in 0..=9")
            if self.peek() == b",":
                self.eat(",")
                self.quoted()
            self.eat(")")
            return Type("DateTime64", (p,))
        if name == "FixedString":
            self.eat("(")
            n = self.int()
            self.eat(")")
            if n <= 0:
                raise ValueError("FixedString size must be positive")
            return Type("FixedString", (n,))
        if name in ("LowCardinality", "Nullable", "Array"):
            self.eat("(")
            inner = self.ty()
            self.eat(")")
            return inner if name == "LowCardinality" else Type(name, (inner,))
        if name == "Map":
            self.eat("(")
            k = self.ty()
            self.eat(",")
            v = self.ty()
            self.eat(")")
            return Type("Map", (k, v))
        if name in ("Enum8", "Enum16"):
            return self.enumeration(name == "Enum16")
        if not name:
            raise ValueError(f"expected a type name at offset {self.i}")
        raise ValueError(f"unsupported type {name}")

    def enumeration(self, wide: bool) -> Type:
        self.eat("(")
        labels: list[tuple[str, int]] = []
        lo, hi = (-32768, 32767) if wide else (-128, 127)
        while True:
            label = self.quoted()
            self.eat("=")
            v = self.int()
            if not lo <= v <= hi:
                raise ValueError(f"enum value {v} is out of range")
            labels.append((label, v))
            if self.peek() == b",":
                self.eat(",")
            else:
                break
        self.eat(")")
        # First declared label wins, like the Rust side's linear search.
        table: dict[str, int] = {}
        for label, v in labels:
            table.setdefault(label, v)
        return Type("Enum", (wide, table))


def parse_type(s: str) -> Type:
    p = _Parser(s)
    try:
        t = p.ty()
        p.ws()
        if p.i != len(p.s):
            raise ValueError("trailing characters")
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise CoreError(f"cannot parse type '{s}': {e}") from None
    return t
