"""Cache keys: the twin equals the extension, and the canonical form's invariances."""

from __future__ import annotations

import json
import random
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchllm._twins import _cache_key

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(
    st.sampled_from(["model", "messages", "user", "stream", "temperature", "tools", "n"])
    | st.text(max_size=8),
    json_values,
    max_size=6,
)


def shuffled(v: Any, rnd: random.Random) -> Any:
    """Same JSON value, keys in another order, integral floats written as ints or floats."""
    if isinstance(v, dict):
        items = list(v.items())
        rnd.shuffle(items)
        return {k: shuffled(x, rnd) for k, x in items}
    if isinstance(v, list):
        return [shuffled(x, rnd) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v) if rnd.random() < 0.5 else v
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53 and rnd.random() < 0.5:
        return float(v)
    return v


@settings(max_examples=300)
@given(obj=json_objects, ns=st.text(max_size=10))
def test_twin_equals_rust(rust: ModuleType, twin: ModuleType, obj: dict[str, Any], ns: str) -> None:
    body = json.dumps(obj).encode()
    assert twin.cache_key(body, ns) == rust.cache_key(body, ns)
    assert twin.context_key(body, ns) == rust.context_key(body, ns)
    assert twin.embed_text(body) == rust.embed_text(body)


@settings(max_examples=200)
@given(obj=json_objects, seed=st.integers(0, 2**32), indent=st.sampled_from([None, 0, 2]))
def test_order_whitespace_and_number_spelling_do_not_matter(
    rust: ModuleType, obj: dict[str, Any], seed: int, indent: int | None
) -> None:
    other = json.dumps(
        shuffled(obj, random.Random(seed)), indent=indent, ensure_ascii=bool(seed % 2)
    )
    assert rust.cache_key(json.dumps(obj).encode(), "ns") == rust.cache_key(other.encode(), "ns")


@settings(max_examples=200)
@given(obj=json_objects, key=st.text(max_size=8), value=json_values)
def test_any_change_outside_ignored_fields_changes_the_key(
    rust: ModuleType, obj: dict[str, Any], key: str, value: Any
) -> None:
    changed = dict(obj)
    changed[key] = value
    same = json.loads(json.dumps(obj)) == json.loads(json.dumps(changed))
    ignored = key in _cache_key.IGNORED_FIELDS
    k1 = rust.cache_key(json.dumps(obj).encode(), "ns")
    k2 = rust.cache_key(json.dumps(changed).encode(), "ns")
    assert (k1 == k2) == (same or ignored)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"1",
        b'"x"',
        b"{",
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":1e400}',
        b'{"a":1' + b"0" * 400 + b"}",
        b"{} x",
        b'{"a":"\\ud800"}',
        b'{"user":"\\udc00"}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xff"}',
        b'{"a":01}',
        ('{"a":' + "[" * 101 + "]" * 101 + "}").encode(),
    ],
)
def test_invalid_bodies_raise_core_error(rust: ModuleType, twin: ModuleType, body: bytes) -> None:
    for mod in (rust, twin):
        with pytest.raises(mod.CoreError):
            mod.cache_key(body, "ns")
        assert issubclass(mod.CoreError, ValueError)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' + b"[" * 99 + b"]" * 99 + b"}",
        b'{"a":18446744073709551615,"b":-9223372036854775809,"c":1' + b"0" * 30 + b"}",
        b'{"a":1e-400,"b":-0,"c":-0.0,"d":9007199254740993,"e":1.7976931348623157e308}',
        b'{"a":"\\ud83d\\ude00","b":"\xf0\x9f\x98\x80","\xc3\xa9":1}',
    ],
)
def test_edge_bodies_agree(rust: ModuleType, twin: ModuleType, body: bytes) -> None:
    assert twin.cache_key(body, "ns") == rust.cache_key(body, "ns")


def test_known_key_is_stable(rust: ModuleType, twin: ModuleType) -> None:
    # Pins the v1 encoding (docs/cache-key.md): changing it invalidates every cache.
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}'
    assert twin.cache_key(body, "p1") == "85a6fb85212bd2c549e26889ee3db9bc"
    assert rust.cache_key(body, "p1") == "85a6fb85212bd2c549e26889ee3db9bc"


def test_context_key_ignores_only_the_last_user_message(rust: ModuleType) -> None:
    def body(history: str, last: str) -> bytes:
        msgs = [{"role": "user", "content": history}, {"role": "assistant", "content": "ok"}]
        msgs.append({"role": "user", "content": last})
        return json.dumps({"model": "m", "messages": msgs}).encode()

    assert rust.context_key(body("h", "a"), "n") == rust.context_key(body("h", "b"), "n")
    assert rust.context_key(body("h", "a"), "n") != rust.context_key(body("other", "a"), "n")


def test_embed_text(rust: ModuleType, twin: ModuleType) -> None:
    cases: list[tuple[Any, str | None]] = [
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "a"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
                }
            ],
            "x\ny",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}], None),
        ([{"role": "system", "content": "s"}], None),
        ([], None),
    ]
    for messages, expected in cases:
        body = json.dumps({"messages": messages}).encode()
        assert rust.embed_text(body) == expected
        assert twin.embed_text(body) == expected
