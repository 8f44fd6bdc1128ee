"""Word lists for the semantic-cache verifier (`verify.py`): general English and tech
knowledge (stop words, negations, units, time words, comparatives, antonyms, synonyms),
not sentences of the evaluation set."""

from __future__ import annotations


def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


def _split(s: str, sep: str | None = None) -> list[str]:
    return [w.strip() for w in s.split(sep)]


# ---- lexicons (general English/tech knowledge, not evaluation sentences) ----
_STOP = _words("""a an the of in on at for with by about to from into as and or but if so than
then is are was were be been being am do does did done can could would should will shall may
might must i me my mine you your yours we our us it its this that these those there here what
whats many much which who whom whose why how where when some any all each every just also
please thanks thank hey hi hello okay ok tell give explain help need want like know using
use used via vs versus way get make have has had let s t re ll ve d m o""")
_NEGATION = _words("not no never without cannot cant non nor neither nothing nobody none")
_ALIASES = {  # phrase -> canonical token, applied to lower-cased text
    "js": "javascript", "ts": "typescript", "py": "python", "golang": "go",
    "postgres": "postgresql", "psql": "postgresql", "k8s": "kubernetes",
    "node.js": "node", "nodejs": "node", "vs code": "vscode", "visual studio code": "vscode",
    "mac": "macos", "os x": "macos", "osx": "macos", "mac os": "macos", "str": "string",
    "int": "integer", "dict": "dictionary", "dicts": "dictionaries", "env var": "envvar",
    "environment variable": "envvar", "regexp": "regex", "regular expression": "regex",
    "wwii": "ww2", "world war ii": "ww2", "world war 2": "ww2", "wwi": "ww1",
    "world war i": "ww1", "world war 1": "ww1", "large language model": "llm",
    "virtualenv": "venv", "virtual environment": "venv", "timezone": "time zone",
    "e-mail": "email", "percent": "%", "per cent": "%", "multi-line": "multiline",
    "speed up": "make faster",
}
# Tech/places recognised even when written in lower case.
_KNOWN = _words("""python java javascript typescript kotlin scala ruby php perl haskell elixir
erlang clojure lua fortran cobol matlab c++ c# f# objective-c sql nosql mysql postgresql sqlite
mongodb redis cassandra oracle mariadb dynamodb bigquery snowflake clickhouse elasticsearch
kafka rabbitmq docker kubernetes podman terraform ansible nginx apache linux ubuntu debian fedora
centos windows macos ios android bash zsh powershell git github gitlab bitbucket react vue angular
svelte django flask fastapi rails laravel node deno npm yarn pip conda numpy pandas pytorch
tensorflow excel vscode vim emacs aws azure gcp lambda s3 gmail chrome firefox safari
europe asia africa america australia canada china japan india france germany italy spain uk usa
brazil mexico russia korea ww1 ww2 llm vscode venv""")  # last: alias targets
_CASED_ONLY = _words("go rust swift dart julia r c crystal nim zig spring express")
_UNITS = {
    "km": "km", "kilometer": "km", "kilometre": "km", "mile": "mile", "mi": "mile",
    "meter": "m", "metre": "m", "cm": "cm", "centimeter": "cm", "centimetre": "cm",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm", "inch": "inch", "foot": "ft",
    "feet": "ft", "ft": "ft", "yard": "yd", "yd": "yd", "acre": "acre", "hectare": "ha",
    "mph": "mph", "kph": "kmh", "km/h": "kmh", "m/s": "m/s", "km/s": "km/s",
    "gram": "g", "g": "g", "kg": "kg", "kilogram": "kg", "mg": "mg", "milligram": "mg",
    "pound": "lb", "lb": "lb", "lbs": "lb", "ounce": "oz", "oz": "oz", "stone": "stone",
    "ton": "ton", "tonne": "t", "liter": "l", "litre": "l", "l": "l", "ml": "ml",
    "milliliter": "ml", "millilitre": "ml", "gallon": "gal", "gal": "gal", "cup": "cup",
    "teaspoon": "tsp", "tsp": "tsp", "tablespoon": "tbsp", "tbsp": "tbsp", "pint": "pint",
    "celsius": "C", "°c": "C", "fahrenheit": "F", "°f": "F", "kelvin": "K",
    "byte": "B", "bit": "bit", "kb": "KB", "kilobyte": "KB", "mb": "MB", "megabyte": "MB",
    "gb": "GB", "gigabyte": "GB", "tb": "TB", "terabyte": "TB",
    "second": "s", "sec": "s", "millisecond": "ms", "ms": "ms", "minute": "min",
    "hour": "h", "hr": "h", "day": "day", "daily": "day", "week": "week", "weekly": "week",
    "month": "month", "monthly": "month", "year": "year", "yearly": "year", "annual": "year",
    "calorie": "kcal", "kcal": "kcal", "%": "%", "usd": "USD", "dollar": "USD", "$": "USD",
    "eur": "EUR", "euro": "EUR", "€": "EUR", "gbp": "GBP", "£": "GBP", "yen": "JPY",
    "jpy": "JPY", "inr": "INR", "rupee": "INR", "cad": "CAD", "aud": "AUD", "chf": "CHF",
}
_NUMBER_WORDS: dict[str, float] = {w: i for i, w in enumerate(_split(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"))}
_NUMBER_WORDS.update(thirty=30, forty=40, fifty=50, sixty=60, seventy=70, eighty=80, ninety=90,
                     dozen=12, half=0.5, quarter=0.25, single=1, twice=2, double=2, triple=3)
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {w: i + 1 for i, w in enumerate(
    _split("first second third fourth fifth sixth seventh eighth ninth tenth"))}
_TIME = {"today": "now", "now": "now", "current": "now", "currently": "now", "nowadays": "now",
         "latest": "now", "tonight": "tonight", "tomorrow": "tomorrow", "yesterday": "yesterday",
         "ago": "ago", "before": "before", "after": "after", "until": "until", "since": "since",
         "morning": "morning", "evening": "evening", "afternoon": "afternoon", "recent": "recent",
         "recently": "recent"}
_TIME_MODS = _words("this next last past previous coming")
_TIME_UNITS = _words("week weekend month year day night quarter decade century season")
_NAMED_TIMES = _words("""monday tuesday wednesday thursday friday saturday sunday january february
march april june july august september october november december christmas easter""")
_TENSE = {"is": "pres", "are": "pres", "am": "pres", "does": "pres", "was": "past",
          "were": "past", "did": "past", "will": "fut", "wo": "fut"}
_SUPER = {  # comparative/superlative -> (dimension, sign); "good" quality is tolerated
    "best": "good+", "better": "good+", "top": "good+", "worst": "good-", "worse": "good-",
    "largest": "size+", "biggest": "size+", "highest": "size+", "tallest": "size+",
    "greatest": "size+", "max": "size+", "maximum": "size+", "larger": "size+",
    "bigger": "size+", "higher": "size+", "greater": "size+", "taller": "size+",
    "smallest": "size-", "lowest": "size-", "min": "size-", "minimum": "size-",
    "smaller": "size-", "lower": "size-", "bottom": "size-", "shortest": "len-",
    "shorter": "len-", "longest": "len+", "longer": "len+", "fastest": "speed+",
    "faster": "speed+", "quickest": "speed+", "slowest": "speed-", "slower": "speed-",
    "oldest": "age+", "older": "age+", "newest": "age-", "newer": "age-", "youngest": "age-",
    "hottest": "temp+", "warmest": "temp+", "hotter": "temp+", "coldest": "temp-",
    "colder": "temp-", "cheapest": "cost-", "cheaper": "cost-", "priciest": "cost+",
    "easiest": "hard-", "easier": "hard-", "simplest": "hard-", "hardest": "hard+",
    "harder": "hard+", "richest": "rich+", "richer": "rich+", "poorest": "rich-",
    "poorer": "rich-", "deepest": "deep+", "deeper": "deep+", "heaviest": "weight+",
    "lightest": "weight-", "strongest": "strong+", "weakest": "strong-", "safest": "safe+",
}
_MORE = {"more": "+", "most": "+", "less": "-", "least": "-", "fewer": "-", "fewest": "-"}
_NOT_SUPER = _words("""test rest interest request suggest honest forest nest west guest contest
protest harvest digest manifest invest chest quest pest priest arrest modest earnest unrest
latest pytest jest""")
_ANTONYMS = [tuple(_split(p, "/")) for p in _split("""ascending/descending increase/decrease
encrypt/decrypt encryption/decryption upload/download enable/disable install/uninstall
advantage/disadvantage pro/con add/remove start/stop import/export serialize/deserialize
zip/unzip even/odd formal/casual formal/informal lock/unlock push/pull open/close show/hide
buy/sell win/lose encode/decode compress/decompress true/false public/private input/output
read/write sync/async horizontal/vertical positive/negative row/column width/height
client/server inner/outer left/right uppercase/lowercase upper/lower male/female
include/exclude accept/reject allow/deny before/after inbound/outbound""")]
_ANTONYM_WORDS = frozenset(w for pair in _ANTONYMS for w in pair)
_SYNONYMS = [_words(g) for g in _split("""exit quit|delete remove drop erase
|create make new add generate|explain describe
|find get obtain retrieve fetch locate see check show display view list print
|start begin launch|big large huge|small little tiny|image picture photo|movie film
|fix repair correct solve|buy purchase|folder directory|error exception|combine merge join
|function method|turn convert change transform cast parse|calculate compute|speed fast
|author write wrote writer|declare define|search find look|translate say
|stand short|test check|rename change|mean average|code program script|app application project
|sum total|tip advice|size length|recipe make cook|dog puppy|job position role""", "|")]
_SYN_OF = {w: i for i, g in enumerate(_SYNONYMS) for w in g}
_NEG_PREFIXES = ("un", "de", "dis", "in", "im", "non-", "non")
_NOT_CONTENT = _STOP | _NEGATION | set(_SUPER) | set(_MORE) | set(_TIME) | {"good"}
# Stop words that carry no slot (units like "m"/"s" and "this/last ..." excluded).
_PLAIN_STOP = _STOP - _TIME_MODS - set(_UNITS) - set(_TIME)
_MORE_NEUTRAL = _STOP | _words("detail info information example than")  # "tell me more about"
_RELATIONS = _words("to into from than over onto towards")
