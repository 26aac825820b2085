"""Numbers in math word problems: the question's numbers become slot tokens [N0], [N1], ... for the model,
and Ape210K-style equations become the expressions the model learns to write.

The model copies a question's number by naming its slot (one token, whatever its digits); numbers not in
the question (1, 100, 3.14...) it spells out digit by digit. Shared by training and serving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.runtime.errors import InvalidInput
from app.tasks.math.evaluator import MAX_DIGITS
from app.text import normalize

MAX_SLOTS = 20  # numbers past the 20th of a question stay digits
SLOT = "[N{}]"
SLOT_TOKENS = tuple(SLOT.format(i) for i in range(MAX_SLOTS))

# a mixed number 3(1/2), a fraction (1/2), a decimal or integer
NUMBER = r"\d+(?:\.\d+)?\(\d+/\d+\)|\(\d+(?:\.\d+)?/\d+(?:\.\d+)?\)|\d+(?:\.\d+)?"
NUMBER_RE = re.compile(NUMBER)
LITERAL_RE = re.compile(r"\d+(?:\.\d+)?")  # one literal as the evaluator reads it (a fraction holds two)
OPERATORS = "+-*/^"


@dataclass(frozen=True)
class Question:
    """A question with its first MAX_SLOTS numbers replaced by slots: `pieces` are characters and slot tokens."""
    pieces: list[str]
    numbers: list[str]  # the number written in slot i, as in the question (e.g. "3(1/2)", "(1/5)", "2.5")


def slot_question(text: str) -> Question:
    """Normalise (full-width -> half-width) and replace numbers by slots, in order of appearance.

    A literal the evaluator would refuse (over MAX_DIGITS characters) is refused here, before any model work:
    copied into a slot it would only come back as a huge unusable expression. The scan is one linear pass."""
    norm = normalize(text)
    for m in LITERAL_RE.finditer(norm):
        if (size := m.end() - m.start()) > MAX_DIGITS:
            raise InvalidInput(f"question: a number of {size} digits, over the limit of {MAX_DIGITS}")
    pieces, numbers, at = [], [], 0
    for m in NUMBER_RE.finditer(norm):
        if len(numbers) == MAX_SLOTS:
            break
        pieces += list(norm[at:m.start()]) + [SLOT.format(len(numbers))]
        numbers.append(m.group())
        at = m.end()
    pieces += list(norm[at:])
    return Question([p for p in pieces if not p.isspace()], numbers)


def number_expression(number: str) -> str:
    """A number as written in a question -> an expression: 3(1/2) -> (3+1/2), (1/5) -> (1/5)."""
    if "(" in number and not number.startswith("("):
        whole, frac = number.split("(", 1)
        return f"({whole}+{frac[:-1]})"
    return number


def render(tokens: list[str], numbers: list[str]) -> str:
    """Target tokens -> a human-readable expression with the question's numbers written in."""
    lookup = {SLOT.format(i): number_expression(n) for i, n in enumerate(numbers)}
    return "".join(lookup.get(t, t) for t in tokens)
