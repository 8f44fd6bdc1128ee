"""Errors raised by the pure-Python twins (the Rust extension defines its own twins)."""

from __future__ import annotations


class CoreError(ValueError):
    """Invalid input to a core function (bad JSON body, unknown encoding, bad vector...)."""


class RowBinaryError(CoreError):
    """A row cannot be encoded; `.row` is its index and `.column` the column name."""

    def __init__(self, message: str, row: int, column: str) -> None:
        super().__init__(message)
        self.row = row
        self.column = column
