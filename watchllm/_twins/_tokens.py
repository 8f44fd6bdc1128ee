"""Twin of `rust_core/src/tokens.rs`: exact tiktoken counts in pure Python.

The BPE ranks (`data/*.ranks.z`) and the Unicode classes (`_unicode.py`) are
generated from the Rust side by `rust_core/examples/gen_twin_data.rs`, and the
split patterns below are tiktoken-rs's, spelled with those explicit classes so
that the stdlib `re` module matches exactly what the Rust `regex` crate matches.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from . import _unicode as u
from ._cache_key import parse_object
from ._errors import CoreError

CL100K = "cl100k_base"
O200K = "o200k_base"


def _fold(word: str) -> str:
    return "".join(f"[{u.FOLD[c]}]" for c in word)


def _contractions(words: tuple[str, ...]) -> str:
    return "|".join("'" + _fold(w) for w in words)


_L, _N, _S = u.L, u.N, u.S
_UPPER = u.LU + u.LT + u.LM + u.LO + u.M
_LOWER = u.LL + u.LM + u.LO + u.M
_O200K_CONTRACTIONS = _contractions(("s", "t", "re", "ve", "m", "ll", "d"))

PATTERNS = {
    # '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
    # |\s++$|\s*[\r\n]|\s+(?!\S)|\s
    CL100K: (
        f"'(?:{'|'.join(_fold(w) for w in ('s', 'd', 'm', 't', 'll', 've', 're'))})"
        f"|[^\\r\\n{_L}{_N}]?+[{_L}]++|[{_N}]{{1,3}}+| ?[^{_S}{_L}{_N}]++[\\r\\n]*+"
        f"|[{_S}]++\\Z|[{_S}]*[\\r\\n]|[{_S}]+(?![^{_S}])|[{_S}]"
    ),
    O200K: (
        f"[^\\r\\n{_L}{_N}]?[{_UPPER}]*[{_LOWER}]+(?:{_O200K_CONTRACTIONS})?"
        f"|[^\\r\\n{_L}{_N}]?[{_UPPER}]+[{_LOWER}]*(?:{_O200K_CONTRACTIONS})?"
        f"|[{_N}]{{1,3}}| ?[^{_S}{_L}{_N}]+[\\r\\n/]*|[{_S}]*[\\r\\n]+"
        f"|[{_S}]+(?![^{_S}])|[{_S}]+"
    ),
}


class _Encoding:
    def __init__(self, name: str) -> None:
        blob = zlib.decompress(
            resources.files(__package__).joinpath(f"data/{name}.ranks.z").read_bytes()
        )
        ranks: dict[bytes, int] = {}
        i = rank = 0
        while i < len(blob):
            n = blob[i]
            ranks[blob[i + 1 : i + 1 + n]] = rank
            i += 1 + n
            rank += 1
        self.ranks = ranks
        self.split: Callable[[str], list[str]] = re.compile(PATTERNS[name]).findall
        self.cache: dict[bytes, int] = {}

    def count(self, text: str) -> int:
        ranks, cache, total = self.ranks, self.cache, 0
        for piece in self.split(text):
            b = piece.encode("utf-8")
            if b in ranks:
                total += 1
                continue
            n = cache.get(b)
            if n is None:
                n = _merge_count(b, ranks)
                if len(cache) < 100_000:
                    cache[b] = n
            total += n
        return total


def _merge_count(piece: bytes, ranks: dict[bytes, int]) -> int:
    """Number of tokens of one piece by byte-pair merging (lowest rank first, leftmost)."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    while len(parts) > 1:
        best_rank, best = -1, -1
        for i in range(len(parts) - 1):
            r = get(parts[i] + parts[i + 1])
            if r is not None and (best < 0 or r < best_rank):
                best_rank, best = r, i
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return len(parts)


@cache
def _encoding(name: str) -> _Encoding:
    return _Encoding(name)


def _get(encoding: str) -> _Encoding:
    if encoding not in PATTERNS:
        raise CoreError(f'unknown encoding {encoding!r} (expected "cl100k_base" or "o200k_base")')
    return _encoding(encoding)


def count_tokens(text: str, encoding: str) -> int:
    """Exact number of tokens of `text` (special tokens counted as ordinary text)."""
    enc = _get(encoding)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CoreError("text is not valid Unicode (lone surrogate)") from None
    return enc.count(text) if text else 0


_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def encoding_for_model(model: str) -> str:
    """The encoding of a model; provider prefixes are ignored; unknown → o200k_base."""
    name = model.rsplit("/", 1)[-1].translate(_ASCII_LOWER)
    if name.startswith(_O200K_PREFIXES):
        return O200K
    if name.startswith(_CL100K_PREFIXES):
        return CL100K
    return O200K


def _string_leaves(v: Any, count: Callable[[str], int]) -> int:
    if isinstance(v, str):
        return count(v)
    if isinstance(v, list):
        return sum(_string_leaves(x, count) for x in v)
    if isinstance(v, dict):
        return sum(_string_leaves(x, count) for x in v.values())
    return 0


def _str_field(v: dict[str, Any], key: str) -> str:
    x = v.get(key)
    return x if isinstance(x, str) else ""


def _strip_dot(s: str) -> str:
    return s[:-1] if s.endswith(".") else s


def _tools_tokens(obj: dict[str, Any], encoding: str, count: Callable[[str], int]) -> int:
    func_init = 10 if encoding == CL100K else 7
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    functions: list[dict[str, Any]] = []
    tools = obj.get("tools")
    if isinstance(tools, list):
        for t in tools:
            if isinstance(t, dict) and t.get("type") == "function":
                f = t.get("function")
                if isinstance(f, dict):
                    functions.append(f)
    legacy = obj.get("functions")
    if isinstance(legacy, list):
        functions.extend(f for f in legacy if isinstance(f, dict))
    if not functions:
        return 0
    total = func_end
    for f in functions:
        total += func_init
        total += count(f"{_str_field(f, 'name')}:{_strip_dot(_str_field(f, 'description'))}")
        params = f.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if not isinstance(props, dict) or not props:
            continue
        total += prop_init
        for name, prop in props.items():
            total += prop_key
            p = prop if isinstance(prop, dict) else {}
            if "enum" in p:
                total += enum_init
                items = p["enum"] if isinstance(p["enum"], list) else []
                for item in items:
                    total += enum_item + (count(item) if isinstance(item, str) else 0)
            line = f"{name}:{_str_field(p, 'type')}:{_strip_dot(_str_field(p, 'description'))}"
            total += count(line)
    return max(total, 0)


def count_chat_tokens(body: bytes | dict[str, Any]) -> int:
    """Prompt tokens of a request body (or the dict orjson parsed it into) by OpenAI's
    cookbook formula (docs/core.md)."""
    if isinstance(body, dict):
        obj = body
    elif isinstance(body, bytes):
        obj = parse_object(body)
    else:
        raise TypeError("count_chat_tokens takes the body (bytes) or its parsed dict")
    model = obj.get("model")
    encoding = encoding_for_model(model) if isinstance(model, str) else O200K
    enc = _get(encoding)

    def count(s: str) -> int:
        return enc.count(s) if s else 0

    total = 0
    messages = obj.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += 3
            for key, value in message.items():
                if key == "name":
                    total += 1
                if key == "content" and isinstance(value, list):
                    for part in value:
                        text = part.get("text") if isinstance(part, dict) else None
                        if isinstance(text, str):
                            total += count(text)
                else:
                    total += _string_leaves(value, count)
        total += 3
    else:
        for field in ("prompt", "input"):
            v = obj.get(field)
            if isinstance(v, str):
                total += count(v)
            elif isinstance(v, list):
                total += sum(count(x) for x in v if isinstance(x, str))
    return total + _tools_tokens(obj, encoding, count)
