"""Token counts: twin == extension == the `tiktoken` package built from the same ranks."""

from __future__ import annotations

import json
import zlib
from functools import cache
from importlib import resources
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ENCODINGS = ["cl100k_base", "o200k_base"]

# tiktoken-rs's split patterns (the same ones the `tiktoken` package uses).
TIKTOKEN_PATTERNS = {
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}


@cache
def tiktoken_encoding(name: str) -> Any:
    """A real `tiktoken.Encoding` from the ranks we ship (no download)."""
    tiktoken = pytest.importorskip("tiktoken")
    blob = zlib.decompress(
        resources.files("watchllm._twins").joinpath(f"data/{name}.ranks.z").read_bytes()
    )
    ranks: dict[bytes, int] = {}
    i = 0
    while i < len(blob):
        n = blob[i]
        ranks[blob[i + 1 : i + 1 + n]] = len(ranks)
        i += 1 + n
    return tiktoken.Encoding(
        name=f"watchllm-{name}",
        pat_str=TIKTOKEN_PATTERNS[name],
        mergeable_ranks=ranks,
        special_tokens={},
    )


tricky = st.text(
    alphabet=st.sampled_from(
        [
            *" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000'sStTdDmMlLvVeErR\u017f\u212a/0123456789",
            "é",
            "ß",
            "İ",
            "ǅ",
            "ʰ",
            "\u0301",
            "中",
            "文",
            "😀",
            "👍",
            "\U0001f3fd",
            "Ω",
            "\u0661",
            "Ⅻ",
            "_",
            "-",
            "!",
            "?",
            ".",
        ]
    ),
    max_size=40,
)
# ASCII text takes the extension's hand-compiled split (tokens/split.rs), not the regex.
ascii_tricky = st.text(
    alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x00\x7f'sStTdDmMlLvVeErR/019aZ_-!?.")),
    max_size=60,
)
texts = st.text(max_size=60) | tricky | ascii_tricky | st.text(st.characters(max_codepoint=127))


@settings(max_examples=400, deadline=None)
@given(text=texts)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_twin_equals_rust_equals_tiktoken(
    rust: ModuleType, twin: ModuleType, encoding: str, text: str
) -> None:
    expected = len(tiktoken_encoding(encoding).encode_ordinary(text))
    assert rust.count_tokens(text, encoding) == expected
    assert twin.count_tokens(text, encoding) == expected


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("hello world", "cl100k_base", 2),
        ("hello world", "o200k_base", 2),
        ("tiktoken is great!", "cl100k_base", 6),
        ("", "o200k_base", 0),
        ("<|endoftext|>", "cl100k_base", 7),
    ],
)
def test_known_counts(
    rust: ModuleType, twin: ModuleType, text: str, encoding: str, count: int
) -> None:
    assert rust.count_tokens(text, encoding) == count
    assert twin.count_tokens(text, encoding) == count


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog. 速い茶色の狐 🦊\n\n" * 500,
    "The quick brown fox jumps over the lazy dog.\n\n" * 500,  # ASCII: the hand split
    # Pieces of 100+ bytes that are not tokens: merged with a heap, not pairwise.
    "data:" + "QmFzZTY0IGRhdGEgaW4gYSBwcm9tcHQ_x9" * 300 + "\n" + "a" * 1000,
])
def test_long_text(rust: ModuleType, twin: ModuleType, text: str) -> None:
    for enc in ENCODINGS:
        expected = len(tiktoken_encoding(enc).encode_ordinary(text))
        assert rust.count_tokens(text, enc) == expected == twin.count_tokens(text, enc)


def test_errors(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        with pytest.raises(mod.CoreError):
            mod.count_tokens("x", "p50k_base")
        with pytest.raises(mod.CoreError):
            mod.count_tokens("\ud800", "o200k_base")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("GPT-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-3-5-sonnet", "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_for_model(rust: ModuleType, twin: ModuleType, model: str, encoding: str) -> None:
    assert rust.encoding_for_model(model) == encoding
    assert twin.encoding_for_model(model) == encoding


def cookbook_count(body: dict[str, Any]) -> int:
    """OpenAI cookbook's num_tokens_from_messages + num_tokens_for_tools, with tiktoken."""
    enc_name = {
        "gpt-4o-mini": "o200k_base",
        "gpt-4": "cl100k_base",
        "gpt-3.5-turbo": "cl100k_base",
    }[body["model"]]
    enc = tiktoken_encoding(enc_name)
    n = 0
    for m in body["messages"]:
        n += 3
        for k, v in m.items():
            n += len(enc.encode_ordinary(v))
            n += 1 if k == "name" else 0
    n += 3
    funcs = [t["function"] for t in body.get("tools", [])]
    if funcs:
        func_init = 10 if enc_name == "cl100k_base" else 7
        for f in funcs:
            n += func_init
            n += len(enc.encode_ordinary(f["name"] + ":" + f["description"].removesuffix(".")))
            props = f["parameters"]["properties"]
            if props:
                n += 3
                for key, p in props.items():
                    n += 3
                    if "enum" in p:
                        n += -3
                        for item in p["enum"]:
                            n += 3 + len(enc.encode_ordinary(item))
                    desc = p["description"].removesuffix(".")
                    n += len(enc.encode_ordinary(f"{key}:{p['type']}:{desc}"))
        n += 12
    return n


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit.",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "gpt-3.5-turbo"])
@pytest.mark.parametrize("with_tools", [False, True])
def test_chat_tokens_follow_the_cookbook(
    rust: ModuleType, twin: ModuleType, model: str, with_tools: bool
) -> None:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful, pattern-following assistant."},
            {
                "role": "system",
                "name": "example_user",
                "content": "New synergies will help drive top-line growth.",
            },
            {"role": "user", "content": "What's the weather like in San Francisco? 🌁"},
        ],
    }
    if with_tools:
        body["tools"] = TOOLS
    raw = json.dumps(body).encode()
    assert rust.count_chat_tokens(raw) == cookbook_count(body) == twin.count_chat_tokens(raw)


chat_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o", "gpt-4", "x"]),
        "messages": st.lists(
            st.dictionaries(
                st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"]),
                st.text(max_size=20)
                | st.lists(
                    st.fixed_dictionaries(
                        {
                            "type": st.sampled_from(["text", "image_url"]),
                            "text": st.text(max_size=10),
                        }
                    )
                )
                | st.none(),
            ),
            max_size=4,
        ),
    },
    optional={"tools": st.just(TOOLS), "prompt": st.text(max_size=10)},
)


@settings(max_examples=150, deadline=None)
@given(body=chat_bodies)
def test_chat_twin_equals_rust(rust: ModuleType, twin: ModuleType, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert twin.count_chat_tokens(raw) == rust.count_chat_tokens(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["text", "type", "name", "content", "function", "parameters",
                         "properties", "enum", "description", "x"]), inner, max_size=4),
    max_leaves=12,
)
odd_bodies = st.dictionaries(
    st.sampled_from(["model", "messages", "tools", "functions", "prompt", "input", "x"]),
    json_values | st.lists(json_values, max_size=3), max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(body=chat_bodies | odd_bodies)
def test_the_parsed_dict_counts_as_the_body(
    rust: ModuleType, twin: ModuleType, body: dict[str, Any]
) -> None:
    """The proxy passes the dict it already parsed: the same count as the raw body, on
    both backends, for well-formed chats and for every odd shape and type."""
    raw = json.dumps(body).encode()
    parsed = orjson.loads(raw)
    expected = twin.count_chat_tokens(raw)
    assert rust.count_chat_tokens(raw) == expected
    assert rust.count_chat_tokens(parsed) == expected
    assert twin.count_chat_tokens(parsed) == expected


def test_count_chat_tokens_takes_bytes_or_a_dict(rust: ModuleType, twin: ModuleType) -> None:
    for mod in (rust, twin):
        with pytest.raises(TypeError):
            mod.count_chat_tokens("not bytes")


@pytest.mark.parametrize("text", [
    "7" * 30_000 + " 12345",  # digits come 3 at a time: a long run must stay linear
    " " * 5_000 + "é" + "\u3000" * 3 + "x",  # an ASCII run ending at non-ASCII
    "12" + "\u0661\u0662" + "3",  # ASCII digits next to Arabic-Indic ones (also \p{N})
])
def test_long_runs_next_to_other_characters(rust: ModuleType, twin: ModuleType,
                                            text: str) -> None:
    for enc in ENCODINGS:
        expected = len(tiktoken_encoding(enc).encode_ordinary(text))
        assert rust.count_tokens(text, enc) == expected == twin.count_tokens(text, enc)


def test_where_the_regex_gives_up_the_count_is_an_error(rust: ModuleType) -> None:
    """~1M non-ASCII spaces exhaust fancy-regex's backtracking stack (tiktoken panics
    there): a CoreError (a ValueError the gateway turns into an estimate), not a panic."""
    from watchllm import core
    from watchllm.events.usage import text_tokens

    text = "\u3000" * 1_000_000 + "a"
    with pytest.raises(rust.CoreError):
        rust.count_tokens(text, "cl100k_base")
    if core.BACKEND == "rust":
        assert text_tokens(text, "cl100k_base") == (3 * 1_000_000 + 1 + 3) // 4
