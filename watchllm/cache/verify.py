"""Second check before a semantic-cache hit is served.

Two texts whose embeddings are close can still ask for different answers:
all-MiniLM-L6-v2 puts "convert string to int" and "convert int to string" at
cosine 0.996. So `verify(query, candidate)` is called after the vector search,
and it serves the cached answer only if both texts agree on every
*answer-determining slot*. The rule, slot by slot (each rejection names it):

1. numbers: the same values (digits, written numbers, decimals, fractions,
   percentages, ordinals); a lone "one"/"1" may stand for "a".
2. units and currencies: when both texts name units they must be the same
   set; a unit asked for ("in km", "to miles") must appear in both texts.
3. negation: the same count of not/no/never/without/n't/non-/cannot; "unX"
   counts as "not X" when the other text says X.
4. quoted strings, inline code and identifiers (snake_case, dotted, camelCase,
   calls, flags, operators): each must appear in the other text.
5. named entities (capitalised words not starting a sentence, acronyms, known
   technologies/places): each must appear in the other text, after aliases
   (JS = JavaScript, k8s = Kubernetes...).
6. direction: two words that both texts relate with to/into/from/than/over
   must come in the same order.
7. time frame: the same time words (today, yesterday, last week, weekdays,
   months, decades, before/after...) and the same tense of the first
   auxiliary (is/was/will) when both texts have one.
8. comparatives/superlatives: the same (dimension, direction) set
   (tallest = highest = max); a lone best/better/good is tolerated.
9. opposites: no antonym pair (ascending/descending, encrypt/decrypt...) split
   between the texts.
10. one-slot swap: if the texts' content words differ by exactly one word on
    each side ("poem about love" vs "poem about loss"), the two words must be
    known synonyms or inflections.

Anything else (synonyms, politeness, casing, punctuation, stop words, reordered
non-relational words) is tolerated. Pure Python, deterministic, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from watchllm.cache._lexicon import (
    _ALIASES,
    _ANTONYM_WORDS,
    _ANTONYMS,
    _CASED_ONLY,
    _KNOWN,
    _MORE,
    _MORE_NEUTRAL,
    _NAMED_TIMES,
    _NEG_PREFIXES,
    _NEGATION,
    _NOT_CONTENT,
    _NOT_SUPER,
    _NUMBER_WORDS,
    _ORDINALS,
    _PLAIN_STOP,
    _RELATIONS,
    _SCALES,
    _STOP,
    _SUPER,
    _SYN_OF,
    _TENSE,
    _TIME,
    _TIME_MODS,
    _TIME_UNITS,
    _UNITS,
)

__all__ = ["DEFAULT_THRESHOLD", "Verdict", "verify"]

# Cosine threshold this rule was evaluated with (docs/semantic-cache.md): below it the
# vector search should not return a candidate at all.
DEFAULT_THRESHOLD = 0.80


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str


# ---- tokenising ----
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|(?<![\w])'([^']+?)'(?![\w])")
_TOKEN = re.compile(
    r"[a-z][\w]*(?:[.:/#+-]+[\w]+)*(?:\+\+|#|\(\))?"              # words, identifiers
    r"|\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?:%|°[cf]|st|nd|rd|th|s\b)?"  # numbers
    r"|(?<![\w-])-{1,2}[a-z][\w-]*"                                # flags
    r"|[=!<>]=?=?=?|[$€£]",                                       # operators, currency
    re.IGNORECASE)
_NEG_CONTRACTION = re.compile(r"\b(\w+)n't\b|\bcan ?not\b", re.IGNORECASE)


@lru_cache(maxsize=8192)
def _stem(w: str) -> str:
    """Crude plural stripping; enough to match "files"/"file", "queries"/"query"."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


_ALIAS_RE = re.compile(
    r"(?<![\w.])(" + "|".join(map(re.escape, sorted(_ALIASES, key=len, reverse=True)))
    + r")(?![\w+#]|\.\w)", re.IGNORECASE)


_ALIAS_FIRST = frozenset(a.split()[0] for a in _ALIASES)
_WORDISH = re.compile(r"[\w.+#-]+")


def _alias(text: str) -> str:
    """Canonical spelling of known aliases ("JS" -> "javascript"), case kept elsewhere."""
    if _ALIAS_FIRST.isdisjoint(_WORDISH.findall(text.lower())):
        return text  # the usual case; the alternation regex is the slow part
    return _ALIAS_RE.sub(lambda m: _ALIASES[m.group(1).lower()], text)


@dataclass(frozen=True, slots=True)
class _Parsed:
    tokens: tuple[str, ...]        # lower-cased, aliased, unstemmed, quotes removed
    bag: frozenset[str]            # stems of tokens plus raw tokens, for containment
    quoted: frozenset[str]
    identifiers: frozenset[str]
    entities: frozenset[str]
    numbers: Counter[str]
    units: frozenset[str]
    asked_units: frozenset[str]
    negations: int
    time: frozenset[str]
    tense: str | None
    degrees: frozenset[str]
    content: tuple[str, ...]       # content-word stems in text order
    stems: frozenset[str]
    relations: frozenset[tuple[str, str]]


_OPERATOR = re.compile(r"[=!<>]=+|[<>]")
_DOTTED = re.compile(r"[a-z]\.[a-z]", re.IGNORECASE)
_CAMEL = re.compile(r"[a-z]+[A-Z]\w*|[A-Z][a-z]+[A-Z]\w*")
_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:/\d+)?)(%|°[cf]|st|nd|rd|th|s)?", re.IGNORECASE)
_PARTS = re.compile(r"[/.:\-]+")
_SENTENCE_END = re.compile(r"[.?!:;]\s|\n")


def _is_identifier(raw: str) -> bool:
    if raw.isalpha() and (raw.islower() or raw[1:].islower() or raw.isupper()):
        return False  # plain word: the common case, decided without a regex
    core = raw.rstrip("()")
    return (raw.endswith("()") or "_" in core or "::" in core or raw.startswith("-")
            or bool(_OPERATOR.fullmatch(raw))
            or bool(_DOTTED.search(core) and not core.endswith(".js"))
            or bool(_CAMEL.fullmatch(core)))


def _number(tok: str) -> str | None:
    if not (tok[:1].isdigit() or tok[:1] == "$"):
        return None
    m = _NUMBER.fullmatch(tok.lstrip("$").replace(",", ""))
    if not m:
        return None
    value, suffix = m.group(1), (m.group(2) or "").lower()
    if "/" not in value:
        value = repr(float(value)).removesuffix(".0")
    return "#" + value if suffix in ("st", "nd", "rd", "th") else value + ("s" * (suffix == "s"))


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Parsed:
    quoted = []
    for m in _QUOTED.finditer(text):
        q = next(g for g in m.groups() if g is not None)
        quoted.append(" ".join(_alias(q).lower().strip(" .?!,").split()))
    shouting = text.isupper()  # ALL CAPS: capitals say nothing about names
    plain, negations = _NEG_CONTRACTION.subn(" ", text)
    plain = _alias(plain)
    raws: list[str] = []
    starts, end = {0}, 0
    for m in _TOKEN.finditer(plain):
        # Sentence starts: capitals after . ? ! : are not evidence of a name.
        if raws and _SENTENCE_END.search(plain, end, m.start() + 1):
            starts.add(len(raws))
        raws.append(m.group())
        end = m.end()
    tokens = [r.lower() for r in raws]
    identifiers, entities, numbers = set(), set(), Counter[str]()
    units, asked, time, degrees, content = set(), set(), set(), set(), list[str]()
    tense: str | None = None
    for i, (raw, tok) in enumerate(zip(raws, tokens, strict=True)):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _PLAIN_STOP:  # most tokens: only their tense matters
            if tense is None and tok in _TENSE:
                tense = _TENSE[tok]
            continue
        stem = _stem(tok)
        if _is_identifier(raw):
            identifiers.add(tok)
        if tok in _KNOWN or (raw[0].isupper() and tok in _CASED_ONLY) or (
                not shouting and i not in starts and raw[:1].isupper() and len(raw) > 1
                and tok not in ("i",)) or (not shouting and raw.isupper() and len(raw) > 1):
            entities.add(tok.removesuffix("'s"))
        num = _number(tok)
        if num is not None:
            numbers[num] += 1
            if tok.endswith("%"):
                units.add("%")
            if tok.startswith("$"):
                units.add("USD")
            if "°" in tok:
                units.add(tok[-1].upper())
            continue
        if stem in _NUMBER_WORDS or tok in _SCALES:
            value = _NUMBER_WORDS.get(stem, 1)
            if tok in _SCALES and prev not in _NUMBER_WORDS:
                numbers[str(_SCALES[tok])] += 1
            elif nxt in _SCALES:
                numbers[repr(float(value * _SCALES[nxt])).removesuffix(".0")] += 1
            elif tok not in _SCALES:
                numbers[repr(float(value)).removesuffix(".0")] += 1
            continue
        if tok in _ORDINALS and not (tok == "second" and (prev in ("a", "per", "one", "each")
                                                          or _number(prev))):
            numbers["#" + str(_ORDINALS[tok])] += 1
            continue
        unit = _UNITS.get(tok) or _UNITS.get(stem)
        # Short unit symbols ("m", "g", "l") only count next to a number or "in/to/per".
        if unit and (len(tok) > 2 or _number(prev) or prev in _UNITS or tok in "$€£"
                     or prev in ("in", "to", "into", "per")) and not (
                tok == "min" and not _number(prev)):  # "min" alone is "minimum"
            units.add(unit)
            if prev in ("in", "to", "into"):
                asked.add(unit)
            continue
        if tok in _TIME:
            time.add(_TIME[tok])
        elif tok in _TIME_MODS and _stem(nxt) in _TIME_UNITS:
            time.add(tok + " " + _stem(nxt))
        elif tok in _NAMED_TIMES:
            time.add(tok)
        if tok in _NEGATION or (tok.startswith("non-") and len(tok) > 4):
            negations += 1
        if tok in _SUPER:
            degrees.add(_SUPER[tok])
        elif tok in _MORE and nxt and nxt not in _MORE_NEUTRAL:
            degrees.add(_stem(nxt) + _MORE[tok])
        elif (tok.endswith("est") and len(tok) > 5 and tok not in _NOT_SUPER
              and tok.isalpha() and stem not in _KNOWN):
            degrees.add(tok + "+")
        # Words owned by another slot (negation, degree, time) are not swap candidates.
        if (tok not in _NOT_CONTENT and (tok.replace("-", "").isalnum() or tok in ("c++", "c#"))):
            content.append(stem)
    bag = frozenset(tokens) | frozenset(map(_stem, tokens)) | frozenset(
        w for tok in tokens if not tok.isalnum() for w in _PARTS.split(tok) if w)
    return _Parsed(tuple(tokens), bag, frozenset(quoted), frozenset(identifiers),
                   frozenset(entities - _STOP), numbers, frozenset(units), frozenset(asked),
                   negations, frozenset(time), tense, frozenset(degrees), tuple(content),
                   frozenset(map(_stem, tokens)), _relations(tokens))


# ---- the checks; each returns a reason string when the pair must be rejected ----
def _contained(items: frozenset[str], other: _Parsed, other_text: str) -> str | None:
    for item in sorted(items):
        if item in other.bag or _stem(item) in other.bag:
            continue
        if (" " in item or not item.isalnum()) and re.search(
                rf"(?<![\w.]){re.escape(item)}(?![\w(])", other_text):
            continue
        return item
    return None


def _relations(toks: list[str]) -> frozenset[tuple[str, str]]:
    """(left, right) word pairs around to/into/from/than: up to two content words on the
    left, the first on the right ("main branch into feature" -> (branch|main, feature))."""
    pairs: set[tuple[str, str]] = set()
    for r, t in enumerate(toks):
        if t not in _RELATIONS:
            continue
        left: list[str] = []
        for w in reversed(toks[:r]):
            if w in _RELATIONS or len(left) == 2:
                break
            if w not in _STOP and not (t == "than" and (w in _SUPER or w.endswith("er"))):
                left.append(_stem(w))
        right = next((_stem(w) for w in toks[r + 1:] if w not in _STOP), None)
        pairs.update((x, right) for x in left if right and x != right)
    return frozenset(pairs)


def _order_conflict(a: _Parsed, b: _Parsed) -> str | None:
    """"London to Paris" / "Paris to London", "Python faster than Java" / reversed."""
    rb = b.relations
    for x, y in sorted(a.relations):
        if (y, x) in rb and (x, y) not in rb:
            return f"{x} -> {y} reversed"
    return None


def _antonym_split(a: _Parsed, b: _Parsed) -> str | None:
    wa, wb = a.stems, b.stems
    if not (wa ^ wb) & _ANTONYM_WORDS:
        return None
    for x, y in _ANTONYMS:
        if (x in wa and y in wb and y not in wa and x not in wb) or (
                y in wa and x in wb and x not in wa and y not in wb):
            return f"{x} vs {y}"
    return None


def _swap(a: _Parsed, b: _Parsed) -> str | None:
    """Same content words in the same order except one position: a filled template slot."""
    if len(a.content) != len(b.content) or len(a.content) < 3:
        return None
    diff = [(x, y) for x, y in zip(a.content, b.content, strict=True) if x != y]
    if len(diff) != 1:
        return None
    x, y = diff[0]
    if x.endswith(y) or y.endswith(x):  # "healthy"/"unhealthy": the negation check decided
        return None
    short = min(len(x), len(y))
    common = next((i for i in range(short) if x[i] != y[i]), short)
    if common >= max(4, short - 1):  # inflections: parse/parsing, format/formats
        return None
    if x in _SYN_OF and _SYN_OF[x] == _SYN_OF.get(y):
        return None
    return f"{x} vs {y}"


# "a mile" / "one mile", "who first..." / "who was the first...": a lone 1 is implicit.
_IMPLICIT_ONE = Counter({"1": 1, "#1": 1})


def verify(query: str, candidate: str) -> Verdict:
    """May the answer cached for `candidate` be served for `query`? (See the module doc.)"""
    a, b = _parse(query), _parse(candidate)
    if a.numbers - _IMPLICIT_ONE != b.numbers - _IMPLICIT_ONE:
        return Verdict(False, f"numbers differ: {sorted(a.numbers)} vs {sorted(b.numbers)}")
    if (a.units and b.units and a.units != b.units) or (a.asked_units - b.units) or (
            b.asked_units - a.units):
        return Verdict(False, f"units differ: {sorted(a.units)} vs {sorted(b.units)}")
    neg_a = a.negations + _prefix_negations(a, b)
    neg_b = b.negations + _prefix_negations(b, a)
    if neg_a != neg_b:
        return Verdict(False, f"negation differs: {neg_a} vs {neg_b}")
    for x, y, ytext in ((a, b, candidate.lower()), (b, a, query.lower())):
        missing = _contained(x.quoted | x.identifiers, y, ytext)
        if missing:
            return Verdict(False, f"code/quote not in both: {missing!r}")
        missing = _contained(x.entities, y, ytext)
        if missing:
            return Verdict(False, f"entity not in both: {missing!r}")
    if reason := _order_conflict(a, b):
        return Verdict(False, f"direction: {reason}")
    if a.time != b.time:
        return Verdict(False, f"time frame differs: {sorted(a.time)} vs {sorted(b.time)}")
    if a.tense and b.tense and a.tense != b.tense:
        return Verdict(False, f"tense differs: {a.tense} vs {b.tense}")
    deg_a, deg_b = a.degrees - {"good+"}, b.degrees - {"good+"}
    if deg_a != deg_b:
        return Verdict(False, f"comparison differs: {sorted(deg_a)} vs {sorted(deg_b)}")
    if reason := _antonym_split(a, b):
        return Verdict(False, f"opposites: {reason}")
    if reason := _swap(a, b):
        return Verdict(False, f"one-word swap: {reason}")
    return Verdict(True, "slots agree")


def _prefix_negations(p: _Parsed, other: _Parsed) -> int:
    """A negating prefix on a word the other text uses reads as "not": "unhealthy" is
    "not healthy", "uninstall" is "not install", "disadvantage" is "not advantage"."""
    mine = set(p.content)
    theirs = set(other.content) - mine
    return sum(1 for t in mine for pre in _NEG_PREFIXES
               if t.startswith(pre) and len(t) - len(pre) > 3 and t[len(pre):] in theirs)
