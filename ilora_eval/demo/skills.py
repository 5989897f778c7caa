"""Synthetic skills of the demo: small deterministic string, list, arithmetic and logic maps.

Every skill draws a *payload* (e.g. ``"abc"``) from a seeded ``random.Random`` and knows the
answer (``"cba"``). A prompt is ``"<instruction>: <payload>\\nAnswer:"`` and its target is
``" <answer>"`` (leading space, no newline), so greedy decoding until ``"\\n"`` followed by exact
match scores it. Each skill has two wordings: ``instruction`` (used to train its LoRA) and
``new_instruction`` (a paraphrase only the unseen demo tasks use).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable

LETTERS = string.ascii_lowercase
VOWELS = set("aeiou")
BOOLS = ("true", "false")
OPPOSITE = {"true": "false", "false": "true", "yes": "no", "no": "yes", "on": "off", "off": "on"}
ANSWER_CUE = "\nAnswer:"


@dataclass(frozen=True)
class Skill:
    name: str
    instruction: str  # training wording (library adapters)
    new_instruction: str  # held-out paraphrase (demo tasks)
    payload: Callable[[random.Random], str]
    answer: Callable[[str], str]
    # True for word -> word maps that can be chained (demo_compose is built from two of them).
    composable: bool = False

    def sample(self, rng: random.Random) -> tuple[str, str]:
        payload = self.payload(rng)
        return payload, self.answer(payload)


def prompt(instruction: str, payload: str) -> str:
    return f"{instruction}: {payload}{ANSWER_CUE}"


def target(answer: str) -> str:
    return " " + answer


# --- payload generators ---------------------------------------------------------------------
# Word skills use 3-letter words: a fixed layout lets the tiny demo model learn them in seconds.

WORD_LEN = 3


def _word(rng: random.Random, n: int = WORD_LEN) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _non_palindrome(rng: random.Random) -> str:
    while True:
        w = _word(rng)
        if w != w[::-1]:
            return w


def _not_all_same(rng: random.Random) -> str:
    while True:
        w = _word(rng)
        if len(set(w)) > 1:
            return w


def _letter_list(rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    return ", ".join(rng.sample(LETTERS, rng.randint(lo, hi)))


def _items(payload: str) -> list[str]:
    return payload.split(", ")


def _digits(rng: random.Random) -> str:
    return " ".join(str(d) for d in rng.sample(range(10), 3))


def _bools(rng: random.Random) -> str:
    return " ".join(rng.choice(BOOLS) for _ in range(3))


def _shift(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


SKILLS: tuple[Skill, ...] = (
    Skill("reverse", "Reverse the word", "Write the word backwards",
          _non_palindrome, lambda p: p[::-1], composable=True),
    Skill("uppercase", "Uppercase the word", "Write the word in capital letters",
          _word, str.upper, composable=True),
    Skill("rotate", "Move the first letter to the end", "Put the initial letter last",
          _not_all_same, lambda p: p[1:] + p[0], composable=True),
    Skill("duplicate", "Repeat the word twice", "Say the word two times",
          _word, lambda p: f"{p} {p}", composable=True),
    Skill("first_item", "First item of the list", "Which item comes first in",
          _letter_list, lambda p: _items(p)[0]),
    Skill("last_item", "Last item of the list", "Which item comes last in",
          _letter_list, lambda p: _items(p)[-1]),
    Skill("count_items", "Count the items in the list", "How many items are in",
          lambda r: _letter_list(r, 1, 5), lambda p: str(len(_items(p)))),
    Skill("next_letter", "Next letter after", "Which letter follows",
          lambda r: r.choice(LETTERS[:-1]), lambda p: _shift(p, 1)),
    Skill("prev_letter", "Letter before", "Which letter comes just before",
          lambda r: r.choice(LETTERS[1:]), lambda p: _shift(p, -1)),
    Skill("add", "Add the numbers", "What is the sum of",
          lambda r: f"{r.randint(0, 9)} + {r.randint(0, 9)}",
          lambda p: str(int(p[0]) + int(p[-1]))),
    Skill("double", "Double the number", "What is twice",
          lambda r: str(r.randint(1, 9)), lambda p: str(2 * int(p))),
    Skill("max_digit", "Largest digit in", "Which number is the biggest among",
          _digits, lambda p: max(p.split())),
    Skill("negate", "Negate the value", "Give the opposite of",
          lambda r: r.choice(sorted(OPPOSITE)), OPPOSITE.__getitem__),
    Skill("all_true", "Are all values true in", "Is every value true among",
          _bools, lambda p: "true" if all(b == "true" for b in p.split()) else "false"),
)

SKILLS_BY_NAME = {s.name: s for s in SKILLS}


def get_skill(name: str) -> Skill:
    return SKILLS_BY_NAME[name]


@dataclass(frozen=True)
class Composite:
    """Apply ``first`` then ``second`` (both composable skills) to one word."""

    name: str
    first: str
    second: str
    instruction: str

    def sample(self, rng: random.Random) -> tuple[str, str]:
        payload, mid = get_skill(self.first).sample(rng)
        return payload, get_skill(self.second).answer(mid)


COMPOSITES: tuple[Composite, ...] = (
    Composite("reverse_uppercase", "reverse", "uppercase", "Write the word backwards in capital letters"),
)
