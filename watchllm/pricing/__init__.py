"""What a request cost: a price table shipped in the package, never fetched at run time.

    table = load_table(settings.prices_file)    # shipped prices.json, overrides merged on top
    table.cost_usd("gpt-4o-2024-08-06", prompt_tokens=1200, completion_tokens=300,
                   cached_tokens=1024)

Token counts follow OpenAI's convention: `prompt_tokens` includes `cached_tokens` (the
Anthropic translation adds cache reads and writes into prompt_tokens the same way).
Names resolve through provider prefixes (`openai/gpt-4o`, `us.anthropic.claude-...`),
dated snapshots (`gpt-4o-2024-08-06` -> `gpt-4o`, `claude-sonnet-4-5-20250929`), `-latest`
and Bedrock/Vertex suffixes; an exact entry (`gpt-4o-2024-05-13`) wins over its family.
Unknown models cost 0.0 and `lookup` returns None (docs/pricing.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Price", "PriceTable", "configure", "cost_usd", "default_table", "load_table"]

_SUFFIXES = (
    re.compile(r"-v\d+(:\d+)?$"),  # Bedrock: anthropic.claude-3-5-sonnet-20241022-v2:0
    re.compile(r"@\d{8}$"),  # Vertex: claude-sonnet-4-5@20250929
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # OpenAI snapshots
    re.compile(r"-\d{8}$"),  # Anthropic snapshots
    re.compile(r"-latest$"),
)
_MAX_MEMO = 10_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token."""

    input: float
    cached_input: float  # equals input when the provider has no cached price
    output: float


def _candidates(model: str) -> list[str]:
    """The names to try, most specific first."""
    out = [model, model.lower()]
    name = model.lower()
    if name.startswith("ft:"):
        return out  # fine-tuned models have their own prices: never priced as the base
    while "/" in name:  # openai/gpt-4o, openrouter/anthropic/claude-...
        name = name.split("/", 1)[1]
        out.append(name)
    if "anthropic." in name:  # Bedrock ids, with or without a region prefix
        name = name.split("anthropic.", 1)[1]
        out.append(name)
    changed = True
    while changed:
        changed = False
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", name)
            if stripped != name and stripped:
                name = stripped
                out.append(name)
                changed = True
    return out


class PriceTable:
    def __init__(self, models: dict[str, Price], aliases: dict[str, str], as_of: str) -> None:
        self.models = {k.lower(): v for k, v in models.items()} | models
        self.aliases = {k.lower(): v for k, v in aliases.items()}
        self.as_of = as_of
        self._memo: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        try:
            return self._memo[model]
        except KeyError:
            pass
        price = None
        for name in _candidates(model):
            price = self.models.get(name)
            if price is None and name in self.aliases:
                price = self.models.get(self.aliases[name])
            if price is not None:
                break
        if len(self._memo) >= _MAX_MEMO:
            self._memo.clear()
        self._memo[model] = price
        return price

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int,
                 cached_tokens: int = 0) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
        return ((max(prompt_tokens, 0) - cached) * price.input + cached * price.cached_input
                + max(completion_tokens, 0) * price.output)


def _parse(doc: Any, source: str) -> tuple[dict[str, Price], dict[str, str], str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("models", {}), dict):
        raise ValueError(f"{source}: expected an object with a 'models' object")
    models: dict[str, Price] = {}
    for name, entry in doc.get("models", {}).items():
        try:
            inp, out = float(entry["input"]), float(entry["output"])
            cached = entry.get("cached_input")
            cin = inp if cached is None else float(cached)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: model {name!r} needs numeric 'input' and 'output' "
                             "(USD per 1M tokens) and optional 'cached_input'") from None
        if min(inp, out, cin) < 0:
            raise ValueError(f"{source}: model {name!r} has a negative price")
        models[name] = Price(inp / 1e6, cin / 1e6, out / 1e6)
    aliases = doc.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ValueError(f"{source}: 'aliases' must map names to model names")
    return models, aliases, str(doc.get("as_of", ""))


def load_table(override_path: str | Path | None = None) -> PriceTable:
    """The shipped table, with the models/aliases of `override_path` merged on top.

    An override with `"replace": true` replaces the shipped table instead. Errors name the
    file and the model (start-up fails rather than pricing wrongly).
    """
    text = resources.files("watchllm.pricing").joinpath("prices.json").read_text("utf-8")
    models, aliases, as_of = _parse(json.loads(text), "prices.json")
    if override_path:
        path = Path(override_path)
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"WATCHLLM_PRICES_FILE {path}: {exc}") from None
        extra, extra_aliases, extra_as_of = _parse(doc, str(path))
        if doc.get("replace") is True:
            models, aliases = {}, {}
        models |= extra
        aliases |= extra_aliases
        as_of = extra_as_of or as_of
    return PriceTable(models, aliases, as_of)


_default: PriceTable | None = None


def configure(override_path: str | Path | None) -> PriceTable:
    """Load the table the module-level `cost_usd` uses (call once at start-up)."""
    global _default
    _default = load_table(override_path)
    return _default


def default_table() -> PriceTable:
    return _default if _default is not None else configure(None)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int,
             cached_tokens: int = 0) -> float:
    return default_table().cost_usd(model, prompt_tokens, completion_tokens, cached_tokens)
