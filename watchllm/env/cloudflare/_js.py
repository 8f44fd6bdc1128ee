"""JS <-> Python at the binding boundary, in one place.

Under Pyodide the bindings are JS objects: arguments must become JS values (dicts as plain
objects, None as `null`, bytes as Uint8Array) and results come back as JsProxy objects
that must be converted (`to_py`) before business code sees them. Under CPython (the
contract tests) the same adapters talk to fakes whose results also need `to_py()`, so a
forgotten conversion fails there too; arguments pass through unchanged.

Bindings may arrive raw or wrapped by the workers SDK (`_BindingWrapper`, which converts
on its own); adapters call `unwrap()` so there is exactly one conversion, ours.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

__all__ = ["IN_PYODIDE", "JsException", "JsProxy", "as_bytes", "error_text", "is_null", "js",
           "js_value", "jsnull", "promise", "to_py", "unwrap"]

try:  # Pyodide
    import js
    from pyodide.ffi import (
        JsException,
        JsProxy,
        create_once_callable,
        to_js,
    )

    try:
        from pyodide.ffi import jsnull
    except ImportError:  # older Pyodide: null converts to None
        jsnull = None
    IN_PYODIDE = True
except ImportError:  # CPython: fakes stand in for the bindings
    js = None
    JsProxy = ()  # isinstance(x, ()) is always False
    jsnull = None
    IN_PYODIDE = False

    class JsException(Exception):  # type: ignore[no-redef]
        """What a failing JS call raises (fakes raise it too)."""


def unwrap(binding: Any) -> Any:
    """The raw JS binding behind the workers SDK's wrappers (or the object itself)."""
    inner = binding
    for attr in ("_binding", "_env"):
        inner = getattr(inner, "__dict__", {}).get(attr, inner)
    return inner


def is_null(value: Any) -> bool:
    """JS `null` or `undefined` (Pyodide 0.28 returns `null` as `jsnull`, not None)."""
    return value is None or (jsnull is not None and value is jsnull)


def to_py(value: Any) -> Any:
    """A JS result as plain Python (dicts, lists, str, int/float, bool, None)."""
    if hasattr(value, "to_py"):
        value = value.to_py()
    return _nulls(value)


def _nulls(value: Any) -> Any:
    if jsnull is not None and value is jsnull:
        return None
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return value


def js_value(value: Any) -> Any:
    """A Python argument as a JS value: dicts become plain objects, None becomes null."""
    if not IN_PYODIDE:
        return value
    if value is None:
        return jsnull
    if isinstance(value, (bytes, bytearray, memoryview)):
        return to_js(bytes(value))  # Uint8Array (a copy: the buffer outlives this call)
    if isinstance(value, (dict, list, tuple)):
        return to_js(_null_for_none(value), dict_converter=js.Object.fromEntries)
    return value


def _null_for_none(value: Any) -> Any:
    if value is None:
        return jsnull
    if isinstance(value, dict):
        return {k: _null_for_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_for_none(v) for v in value]
    return value


def as_bytes(value: Any) -> bytes:
    """An ArrayBuffer / Uint8Array result (or bytes from a fake) as bytes."""
    if isinstance(value, bytes):
        return value
    if hasattr(value, "to_bytes"):
        return bytes(value.to_bytes())
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected binary data from the binding, got {type(value).__name__}")


def promise(awaitable: Awaitable[Any]) -> Any:
    """A JS Promise settled when `awaitable` finishes (for `ctx.waitUntil`); the awaitable
    itself under CPython. The promise resolves to undefined: waitUntil needs no value."""
    if not IN_PYODIDE:
        return awaitable
    import asyncio

    task = asyncio.ensure_future(awaitable)

    def executor(resolve: Any, reject: Any) -> None:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                reject("cancelled")
            elif fut.exception() is not None:
                reject(error_text(fut.exception()))  # type: ignore[arg-type]
            else:
                resolve()

        task.add_done_callback(done)

    return js.Promise.new(create_once_callable(executor))


def error_text(exc: BaseException) -> str:
    """The message of a JS error (or any exception), one line."""
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
