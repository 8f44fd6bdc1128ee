"""verify(): each rule rejects the slot change it guards, and paraphrases pass.

Sentences here are written for these tests, not taken from the evaluation set.
"""

from __future__ import annotations

import time

import pytest

from watchllm.cache.verify import Verdict, verify

REJECT = {
    "numbers": [
        ("What is 12% of 250?", "What is 12% of 300?"),
        ("Give me three ideas for a birthday party", "Give me seven ideas for a birthday party"),
        ("Is 2.5 bigger than 2.05?", "Is 2.5 bigger than 2.50001?"),
        ("What is the 3rd planet from the sun?", "What is the 4th planet from the sun?"),
        ("Loan of $20,000 over 4 years", "Loan of $25,000 over 4 years"),
        ("Explain the second law of thermodynamics", "Explain the third law of thermodynamics"),
    ],
    "units": [
        ("Convert 10 pounds to kilograms", "Convert 10 pounds to grams"),
        ("How many milliseconds are in a minute?", "How many seconds are in a minute?"),
        ("What is 3 GB in MB?", "What is 3 TB in MB?"),
        ("How many euros is 40 dollars?", "How many yen is 40 dollars?"),
    ],
    "negation": [
        ("Which birds can fly?", "Which birds cannot fly?"),
        ("List the columns that are NULL", "List the columns that are NOT NULL"),
        ("Recipes with eggs", "Recipes without eggs"),
        ("Why does my script exit?", "Why doesn't my script exit?"),
        ("Languages that have garbage collection", "Languages that have no garbage collection"),
        ("Users who logged in this month", "Users who never logged in this month"),
        ("How do I install pandas?", "How do I uninstall pandas?"),
    ],
    "code and quotes": [
        ("What does `git stash pop` do?", "What does `git stash drop` do?"),
        ("Explain Python's `functools.partial`", "Explain Python's `functools.wraps`"),
        ("How does zip() work?", "How does enumerate() work?"),
        ("What is a KeyError in Python?", "What is a ValueError in Python?"),
        ("Meaning of 'je ne sais quoi'", "Meaning of 'joie de vivre'"),
        ("What does rm -rf do?", "What does rm -i do?"),
    ],
    "entities": [
        ("How do I read a CSV file in Python?", "How do I read a CSV file in Ruby?"),
        ("Best beaches in Portugal", "Best beaches in Greece"),
        ("Who founded Amazon?", "Who founded Netflix?"),
        ("how to deploy on kubernetes", "how to deploy on terraform"),
        ("What is the capital of Peru?", "What is the capital of Chile?"),
    ],
    "direction": [
        ("Convert kilometers to miles", "Convert miles to kilometers"),
        ("Bus from Lyon to Nice", "Bus from Nice to Lyon"),
        ("Convert a tuple into a list", "Convert a list into a tuple"),
        ("Is Go faster than Rust?", "Is Rust faster than Go?"),
        ("Move files from Dropbox to Google Drive", "Move files from Google Drive to Dropbox"),
    ],
    "time": [
        ("What's on TV tonight?", "What was on TV last night?"),
        ("Weather in Oslo tomorrow", "Weather in Oslo today"),
        ("Who won the election last year?", "Who won the election this year?"),
        ("Who is the prime minister of Italy?", "Who was the prime minister of Italy?"),
        ("Is the museum open on Sunday?", "Is the museum open on Saturday?"),
        ("What to eat before running", "What to eat after running"),
    ],
    "comparatives": [
        ("Which is the largest ocean?", "Which is the smallest ocean?"),
        ("Cheapest way to travel in Japan", "Most expensive way to travel in Japan"),
        ("How to use less RAM in Chrome", "How to use more RAM in Chrome"),
        ("What's the worst sorting algorithm?", "What's the best sorting algorithm?"),
        ("Find the minimum of an array", "Find the maximum of an array"),
        ("Which is the longest bone in the body?", "Which is the strongest bone in the body?"),
    ],
    "opposites": [
        ("Sort names in ascending order", "Sort names in descending order"),
        ("How to enable autosave in Word", "How to disable autosave in Word"),
        ("How do I encode a URL?", "How do I decode a URL?"),
        ("How do I push a Docker image?", "How do I pull a Docker image?"),
    ],
    "one-word swap": [
        ("Write a song about rain", "Write a song about snow"),
        ("How do I bake bread in an oven?", "How do I bake cookies in an oven?"),
        ("Plural of the word mouse", "Plural of the word goose"),
    ],
}

# Known gaps (docs/semantic-cache.md): kept here so a fix shows up as an XPASS.
GAPS = [
    # one-word swaps need >= 3 content words, else rewordings were rejected too
    ("What is the plural of mouse?", "What is the plural of goose?"),
    # time-zone questions with no to/from/than between the two places
    ("What time is it in Lima when it's 9am in Madrid?",
     "What time is it in Madrid when it's 9am in Lima?"),
]

ACCEPT = [
    ("How do I reverse a string in Python?", "python: how to reverse a string"),
    ("What's the capital of Norway?", "Which city is the capital of Norway?"),
    ("Could you please explain what recursion is?", "What is recursion?"),
    ("How many grams are in a kilogram?", "How many g in one kg?"),
    ("Give me 3 tips for public speaking", "What are three tips for public speaking?"),
    ("How do I convert a string to an int in JS?", "JavaScript: turn a string into an integer"),
    ("Why doesn't my loop stop?", "Why won't my loop stop?".replace("won't", "doesn't")),
    ("How can I run a script without root?", "Run a script with no root privileges"),
    ("What is the difference between HTTP and HTTPS?", "HTTPS vs HTTP: what's the difference?"),
    ("What's the tallest building in the world?", "Which building is the highest in the world?"),
    ("WHAT IS THE BOILING POINT OF WATER?", "What is the boiling point of water?"),
    ("How do I delete a file in Linux?", "Linux: how to remove a file"),
    ("Which is the best IDE for Java?", "What's a good IDE for Java?"),
    ("What does 'deja vu' mean?", "Meaning of 'deja vu'"),
    ("How do I use `git rebase`?", "How should I use git rebase?"),
    ("What's today's date in Python?", "How do I get the current date in Python?"),
    ("How far is Mars from the Sun?", "What is the distance between the Sun and Mars?"),
    ("Explain k8s pods", "Explain Kubernetes pods"),
    ("Write a poem about the sea", "Write a short poem about the sea"),
    ("Translate 'good night' into Italian", "How do you say 'good night' in Italian?"),
]


@pytest.mark.parametrize(
    ("rule", "a", "b"), [(rule, a, b) for rule, cases in REJECT.items() for a, b in cases])
def test_rejects(rule: str, a: str, b: str) -> None:
    for x, y in ((a, b), (b, a)):  # the rule is symmetric
        verdict = verify(x, y)
        assert not verdict.ok, f"{rule}: {x!r} / {y!r} accepted"
        assert verdict.reason


@pytest.mark.xfail(reason="known gap of the rule", strict=True)
@pytest.mark.parametrize(("a", "b"), GAPS)
def test_known_gaps(a: str, b: str) -> None:
    assert not verify(a, b).ok


@pytest.mark.parametrize(("a", "b"), ACCEPT)
def test_accepts_paraphrases(a: str, b: str) -> None:
    for x, y in ((a, b), (b, a)):
        assert verify(x, y) == Verdict(True, "slots agree"), verify(x, y).reason


def test_identical_and_empty() -> None:
    assert verify("How do I exit vim?", "How do I exit vim?").ok
    assert verify("", "").ok


def test_reason_names_the_slot() -> None:
    assert verify("Convert USD to EUR", "Convert EUR to USD").reason.startswith("direction")
    assert verify("Is it safe?", "Is it not safe?").reason.startswith("negation")
    assert verify("Top 5 films", "Top 7 films").reason.startswith("numbers")


def test_fast_enough() -> None:
    from watchllm.cache import verify as module

    pairs = [(a, b) for cases in REJECT.values() for a, b in cases] + ACCEPT
    module._parse.cache_clear()
    start = time.perf_counter()
    for a, b in pairs:
        verify(a, b)
    per_pair = (time.perf_counter() - start) / len(pairs)
    assert per_pair < 2e-3  # generous: shared CI machines; typical is ~0.1 ms (bench/)
