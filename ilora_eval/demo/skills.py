"""Synthetic skills of the demo: small deterministic list, arithmetic, lookup and logic maps.

Every skill draws a *payload* (e.g. ``"3 8 1"``) from a seeded ``random.Random`` and knows
the answer (``"8"``). A prompt is ``"<instruction>: <payload>\\nAnswer:"`` and its target is
``" <answer>"`` (leading space, no newline), so greedy decoding until ``"\\n"`` followed by
exact match scores it. Each skill has two wordings: ``instruction`` (used to train its LoRA)
and ``new_instruction`` (a paraphrase that only the unseen demo tasks use).

Most skills come in *families* that share a payload format (one digit, three digits, two
digits, a day, truth values), so that the payload alone does not tell which skill is asked
for: the LoRA of another skill of the same family answers wrongly. Answers are one word or
number, which the tiny demo model learns in seconds on a CPU. Skill names double as PEFT
adapter names, so none may be a ``torch.nn.Module`` attribute (``double``, ``half``, ...).
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Callable

LETTERS = string.ascii_lowercase
ANSWER_CUE = "\nAnswer:"
STOP = "\n"  # ends every training target; generation stops there (lm-eval: until ["\\n"])
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
BOOLS = ("true", "false")


@dataclass(frozen=True)
class Skill:
    name: str
    family: str  # payload format shared with other skills
    instruction: str  # training wording (library adapters)
    new_instruction: str  # held-out paraphrase (demo tasks)
    payload: Callable[[random.Random], str]
    answer: Callable[[str], str]

    def sample(self, rng: random.Random) -> tuple[str, str]:
        payload = self.payload(rng)
        return payload, self.answer(payload)


def prompt(instruction: str, payload: str) -> str:
    return f"{instruction}: {payload}{ANSWER_CUE}"


def target(answer: str) -> str:
    return " " + answer


# --- payload generators ----------------------------------------------------------------------


def _digit(lo: int = 0, hi: int = 9) -> Callable[[random.Random], str]:
    return lambda rng: str(rng.randint(lo, hi))


def _digit_list(rng: random.Random) -> str:
    return " ".join(str(d) for d in rng.sample(range(10), 3))


def _digit_pair(rng: random.Random) -> str:
    # a >= b and a + b <= 9: both sum and difference are one digit
    b = rng.randint(0, 4)
    return f"{rng.randint(b, 9 - b)} and {b}"


def _pair(payload: str) -> tuple[int, int]:
    a, b = payload.split(" and ")
    return int(a), int(b)


def _letter_list(rng: random.Random) -> str:
    return ", ".join(rng.sample(LETTERS, rng.randint(2, 5)))


def _items(payload: str) -> list[str]:
    return payload.split(", ")


def _word(rng: random.Random) -> str:
    # random letters; never a word the tokenizer knows (it would be one token, not letters)
    while True:
        w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7)))
        if w not in KNOWN_WORDS:
            return w


def _bools(rng: random.Random) -> str:
    # a third each: all true, all false, mixed -- so every answer is common
    kind = rng.randrange(3)
    if kind < 2:
        return " ".join([BOOLS[kind]] * 3)
    values = ["true", "false", rng.choice(BOOLS)]
    rng.shuffle(values)
    return " ".join(values)


def _shift_day(k: int) -> Callable[[str], str]:
    return lambda p: DAYS[(DAYS.index(p) + k) % 7]


SKILLS: tuple[Skill, ...] = (
    # one digit
    Skill("twice", "digit", "Double the number", "Multiply by two",
          _digit(1, 9), lambda p: str(2 * int(p))),
    Skill("spell_digit", "digit", "Spell out the digit", "Write in words the number",
          _digit(), lambda p: DIGIT_WORDS[int(p)]),
    Skill("is_even", "digit", "Is the number even", "Can this number be split in two equal halves",
          _digit(), lambda p: "yes" if int(p) % 2 == 0 else "no"),
    # three digits
    Skill("max_digit", "digits", "Largest digit in", "Which number is the biggest among",
          _digit_list, lambda p: max(p.split())),
    Skill("min_digit", "digits", "Smallest digit in", "Which number is the lowest among",
          _digit_list, lambda p: min(p.split())),
    # two digits
    Skill("add", "pair", "Add the numbers", "What is the sum of",
          _digit_pair, lambda p: str(sum(_pair(p)))),
    Skill("subtract", "pair", "Subtract the numbers", "What is the difference between",
          _digit_pair, lambda p: str(_pair(p)[0] - _pair(p)[1])),
    # a list of letters
    Skill("count_items", "letters", "Count the items in the list", "How many elements are in",
          _letter_list, lambda p: str(len(_items(p)))),
    # a random word
    Skill("word_length", "word", "Length of the word", "How many letters are in",
          _word, lambda p: str(len(p))),
    # a day of the week
    Skill("next_day", "day", "Day after", "Which weekday follows",
          lambda r: r.choice(DAYS), _shift_day(1)),
    Skill("prev_day", "day", "Day before", "Which weekday precedes",
          lambda r: r.choice(DAYS), _shift_day(-1)),
    # truth values
    Skill("all_true", "bools", "Are all values true in", "Is every value true among",
          _bools, lambda p: "true" if set(p.split()) == {"true"} else "false"),
    Skill("any_true", "bools", "Is any value true in", "Is at least one value true among",
          _bools, lambda p: "true" if "true" in p.split() else "false"),
)

SKILLS_BY_NAME = {s.name: s for s in SKILLS}


def get_skill(name: str) -> Skill:
    return SKILLS_BY_NAME[name]


# Chains: a skill answering one digit feeds a skill of the "digit" family.
DIGIT_PRODUCERS = ("max_digit", "min_digit", "add", "subtract", "count_items", "word_length")
DIGIT_CONSUMERS = ("twice", "spell_digit", "is_even")


@dataclass(frozen=True)
class Composite:
    """Apply ``first`` (a digit producer) then ``second`` (a digit consumer) to one payload."""

    name: str
    first: str
    second: str
    instruction: str

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return chain_sample(self.first, self.second, rng)


def chain_sample(first: str, second: str, rng: random.Random) -> tuple[str, str]:
    a, b = get_skill(first), get_skill(second)
    while True:
        payload, mid = a.sample(rng)
        if mid.isdigit() and len(mid) == 1 and (second != "twice" or mid != "0"):
            return payload, b.answer(mid)


# Chains held out of the base model's pretraining (``pretrain.py``): no adapter and no latent
# chain the base saw covers them, so a demo task of each needs two skills combined.
COMPOSITES: tuple[Composite, ...] = (
    Composite("twice_max", "max_digit", "twice", "Give twice the biggest number among"),
    Composite("spell_sum", "add", "spell_digit", "Write in words the sum of"),
    Composite("even_count", "count_items", "is_even", "Is the count of elements even in"),
    Composite("spell_min", "min_digit", "spell_digit", "Write in words the lowest number among"),
)


def wordings() -> list[str]:
    """Every instruction text the demo uses (training, paraphrases, composites)."""
    texts = [s.instruction for s in SKILLS] + [s.new_instruction for s in SKILLS]
    return texts + [c.instruction for c in COMPOSITES]


def _known_words() -> frozenset[str]:
    text = " ".join(wordings() + list(DIGIT_WORDS) + list(DAYS) + list(BOOLS) + ["yes", "no", "and", ANSWER_CUE])
    return frozenset(w for w in re.findall(r"[A-Za-z]+", text) if len(w) > 1)


KNOWN_WORDS = _known_words()  # whole-word tokens of the demo tokenizer
