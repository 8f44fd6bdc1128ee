from __future__ import annotations

import json
from pathlib import Path

import pytest

from watchllm.pricing import Price, cost_usd, default_table, load_table


@pytest.mark.parametrize(("model", "family"), [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("GPT-4.1-2025-04-14", "gpt-4.1"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
    ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
     "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
])
def test_lookup_normalises_names(model: str, family: str) -> None:
    table = default_table()
    assert table.lookup(model) == table.lookup(family) is not None


def test_exact_snapshot_wins_and_unknowns_cost_nothing() -> None:
    table = default_table()
    assert table.lookup("gpt-4o-2024-05-13") == Price(5e-6, 5e-6, 15e-6)
    assert table.lookup("ft:gpt-4o-mini-2024-07-18:org::abc") is None  # fine-tunes differ
    assert table.lookup("no-such-model") is None
    assert cost_usd("no-such-model", 1000, 1000) == 0.0


def test_cost_formula_cached_tokens_are_part_of_prompt() -> None:
    # gpt-4o: $2.50 in, $1.25 cached, $10 out per 1M tokens.
    assert cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert cost_usd("gpt-4o", 1_000_000, 1_000_000, 1_000_000) == pytest.approx(11.25)
    assert cost_usd("gpt-4o", 2000, 500, 1500) == pytest.approx(
        (500 * 2.5 + 1500 * 1.25 + 500 * 10) / 1e6)
    assert cost_usd("gpt-4o", 10, 0, 50) == pytest.approx(10 * 1.25e-6)  # cached <= prompt
    # No cached price: cached tokens bill at the input price.
    assert cost_usd("gpt-4-turbo", 100, 0, 100) == pytest.approx(100 * 10e-6)


def test_shipped_table_is_dated_and_complete() -> None:
    doc = json.loads((Path(__file__).parents[2] / "watchllm/pricing/prices.json").read_text())
    assert doc["as_of"] >= "2026-01-01"
    providers = {m["provider"] for m in doc["models"].values()}
    assert {"openai", "anthropic", "deepseek", "groq", "together"} <= providers
    for name, target in doc["aliases"].items():
        assert target in doc["models"], name
    assert default_table().as_of == doc["as_of"]


def test_override_file_merges_or_replaces(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"as_of": "2026-12-01", "models": {
        "gpt-4o": {"input": 1.0, "output": 2.0},
        "my-local-model": {"input": 0.0, "output": 0.0, "cached_input": 0.0}}}))
    table = load_table(path)
    assert table.lookup("gpt-4o-2024-08-06") == Price(1e-6, 1e-6, 2e-6)
    assert table.lookup("my-local-model") == Price(0.0, 0.0, 0.0)
    assert table.lookup("claude-haiku-4-5") is not None and table.as_of == "2026-12-01"
    path.write_text(json.dumps({"replace": True, "models": {"x": {"input": 1, "output": 1}}}))
    assert load_table(path).lookup("gpt-4o") is None
    path.write_text(json.dumps({"models": {"x": {"input": "free"}}}))
    with pytest.raises(ValueError, match="'x'"):
        load_table(path)
    with pytest.raises(ValueError, match="WATCHLLM_PRICES_FILE"):
        load_table(tmp_path / "missing.json")
