"""Twin of `rust_core/src/cache_key.rs`: canonical request keys (docs/cache-key.md)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

from ._errors import CoreError

IGNORED_FIELDS = frozenset(
    {
        "user",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "watchllm",
    }
)
CACHE_DOMAIN = b"watchllm.cache_key.v1"
CONTEXT_DOMAIN = b"watchllm.context_key.v1"
MAX_DEPTH = 100
_I64 = 9223372036854775808  # 2**63
_I64F = 9.223372036854775808e18

_NULL, _FALSE, _TRUE, _INT, _FLOAT, _STR, _ARRAY, _OBJECT = (bytes([i]) for i in range(8))
_pack_q = struct.Struct("<q").pack
_pack_Q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


def _parse_int(s: str) -> int | float:
    # Beyond 19 digits the value is outside i64 anyway: parse as a float (correctly
    # rounded, like serde_json), which also avoids Python's int-digits limit.
    return int(s) if len(s) <= 20 else _parse_float(s)


def _parse_float(s: str) -> float:
    f = float(s)
    if f in (float("inf"), float("-inf")):
        raise CoreError(f"request body is not valid JSON: number out of range: {s[:40]}")
    return f


def _reject_constant(s: str) -> Any:
    raise CoreError(f"request body is not valid JSON: {s} is not a JSON value")


def parse_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (raises CoreError)."""
    try:
        text = bytes(body).decode("utf-8")
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except CoreError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise CoreError(f"request body is not valid JSON: {e}") from None
    if _MAYBE_SURROGATE(text):
        _check_strings(value)
    if _depth(value) > MAX_DEPTH:
        raise CoreError(f"request body is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, dict):
        raise CoreError("request body is not a JSON object")
    return value


_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]").search


def _check_strings(v: Any) -> None:
    """Reject lone surrogates anywhere (serde_json refuses them while parsing)."""
    if isinstance(v, str):
        _utf8(v)
    elif isinstance(v, list):
        for x in v:
            _check_strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            _utf8(k)
            _check_strings(x)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise CoreError("request body is not valid JSON: lone surrogate in string") from None


def _bytes(out: bytearray, b: bytes) -> None:
    out += _pack_Q(len(b))
    out += b


def _number(out: bytearray, n: float) -> None:
    if isinstance(n, int):
        if -_I64 <= n < _I64:
            out += _INT
            out += _pack_q(n)
            return
        n = float(n)
    if n.is_integer() and -_I64F <= n < _I64F:
        out += _INT
        out += _pack_q(int(n))
    else:
        out += _FLOAT
        out += _pack_d(n)


def _value(out: bytearray, v: Any) -> None:
    if isinstance(v, str):
        out += _STR
        _bytes(out, _utf8(v))
    elif v is None:
        out += _NULL
    elif v is True:
        out += _TRUE
    elif v is False:
        out += _FALSE
    elif isinstance(v, (int, float)):
        _number(out, v)
    elif isinstance(v, list):
        out += _ARRAY
        out += _pack_Q(len(v))
        for x in v:
            _value(out, x)
    else:
        _object(out, v, ())


def _object(out: bytearray, obj: dict[str, Any], ignored: frozenset[str] | tuple[()]) -> None:
    items = sorted((_utf8(k), x) for k, x in obj.items() if k not in ignored)
    out += _OBJECT
    out += _pack_Q(len(items))
    for k, x in items:
        _bytes(out, k)
        _value(out, x)


def last_user_index(obj: dict[str, Any]) -> int | None:
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return None
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "user":
            return i
    return None


def _key(domain: bytes, namespace: str, obj: dict[str, Any]) -> str:
    out = bytearray()
    _bytes(out, domain)
    _bytes(out, _utf8(namespace))
    _object(out, obj, IGNORED_FIELDS)
    return hashlib.blake2b(out, digest_size=16).hexdigest()


def cache_key(body: bytes, namespace: str) -> str:
    """32 hex chars identifying the canonical request in `namespace`."""
    return _key(CACHE_DOMAIN, namespace, parse_object(body))


def context_key(body: bytes, namespace: str) -> str:
    """The key of the request with its last user message removed."""
    obj = parse_object(body)
    i = last_user_index(obj)
    if i is not None:
        obj = dict(obj)
        obj["messages"] = obj["messages"][:i] + obj["messages"][i + 1 :]
    return _key(CONTEXT_DOMAIN, namespace, obj)


def embed_text(body: bytes) -> str | None:
    """Text of the last user message; None when absent or not pure text."""
    obj = parse_object(body)
    i = last_user_index(obj)
    if i is None:
        return None
    content = obj["messages"][i].get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "\n".join(texts)
