"""The subset of orjson's API WatchLLM uses, on the stdlib `json` (bundled into the Worker).

orjson is in Pyodide's package set, but a Worker cannot always load it (and the offline
test tier cannot download it), so the bundle ships this stand-in when no real orjson is
vendored. Semantics match what the app relies on: `dumps` returns compact UTF-8 bytes,
datetimes become RFC 3339 strings (unless OPT_PASSTHROUGH_DATETIME hands them to
`default`), `loads` takes bytes or str, errors are `JSONDecodeError` (a ValueError).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json as _json
import uuid
from collections.abc import Callable
from typing import Any

__version__ = "0.0-watchllm-compat"
OPT_APPEND_NEWLINE = 1 << 0
OPT_INDENT_2 = 1 << 1
OPT_NAIVE_UTC = 1 << 2
OPT_NON_STR_KEYS = 1 << 3
OPT_OMIT_MICROSECONDS = 1 << 4
OPT_PASSTHROUGH_DATETIME = 1 << 9
OPT_SORT_KEYS = 1 << 5
OPT_UTC_Z = 1 << 7

JSONDecodeError = _json.JSONDecodeError


class JSONEncodeError(TypeError):
    pass


def _native(value: Any, passthrough_dt: bool) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)) and not passthrough_dt:
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError


def dumps(obj: Any, default: Callable[[Any], Any] | None = None,
          option: int | None = None) -> bytes:
    opt = option or 0
    passthrough = bool(opt & OPT_PASSTHROUGH_DATETIME)

    def fallback(value: Any) -> Any:
        try:
            return _native(value, passthrough)
        except TypeError:
            if default is None:
                raise JSONEncodeError(f"Type is not JSON serializable: {type(value).__name__}") \
                    from None
            return default(value)

    try:
        text = _json.dumps(obj, default=fallback, ensure_ascii=False, allow_nan=False,
                           separators=(",", ":") if not opt & OPT_INDENT_2 else None,
                           indent=2 if opt & OPT_INDENT_2 else None,
                           sort_keys=bool(opt & OPT_SORT_KEYS))
    except ValueError as exc:  # NaN/Infinity: orjson writes null
        if "Out of range float" not in str(exc):
            raise JSONEncodeError(str(exc)) from None
        text = _json.dumps(_nan_to_none(obj), default=fallback, ensure_ascii=False,
                           separators=(",", ":"), sort_keys=bool(opt & OPT_SORT_KEYS))
    except TypeError as exc:
        raise JSONEncodeError(str(exc)) from None
    data = text.encode("utf-8", "surrogatepass")
    return data + b"\n" if opt & OPT_APPEND_NEWLINE else data


def _nan_to_none(obj: Any) -> Any:
    if (isinstance(obj, float) and obj != obj) or obj in (float("inf"), float("-inf")):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8")
    return _json.loads(data)
