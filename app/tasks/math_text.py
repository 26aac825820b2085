"""Numbers in math word problems: the question's numbers become slot tokens [N0], [N1], ... for the model,
and Ape210K-style equations become the expressions the model learns to write.

The model copies a question's number by naming its slot (one token, whatever its digits); numbers not in
the question (1, 100, 3.14...) it spells out digit by digit. Shared by training and serving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.text import normalize

MAX_SLOTS = 20  # numbers past the 20th of a question stay digits
SLOT = "[N{}]"
SLOT_TOKENS = tuple(SLOT.format(i) for i in range(MAX_SLOTS))

# a mixed number 3(1/2), a fraction (1/2), a decimal or integer
NUMBER = r"\d+(?:\.\d+)?\(\d+/\d+\)|\(\d+(?:\.\d+)?/\d+(?:\.\d+)?\)|\d+(?:\.\d+)?"
NUMBER_RE = re.compile(NUMBER)
EQUATION_TOKEN_RE = re.compile(rf"({NUMBER})|(\*\*|[-+*/^()%:])")
OPERATORS = "+-*/^"


@dataclass(frozen=True)
class Question:
    """A question with its first MAX_SLOTS numbers replaced by slots: `pieces` are characters and slot tokens."""
    pieces: list[str]
    numbers: list[str]  # the number written in slot i, as in the question (e.g. "3(1/2)", "(1/5)", "2.5")


def slot_question(text: str) -> Question:
    """Normalise (full-width -> half-width) and replace numbers by slots, in order of appearance."""
    norm = normalize(text)
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


class EquationError(ValueError):
    pass


def expression_tokens(equation: str, numbers: list[str]) -> list[str]:
    """An Ape210K equation ("x=7200/(1+7%-95%)") -> target tokens over slots and characters.

    `x=` is stripped, [ ] become ( ), ** becomes ^, ratios a:b become a/b, x% becomes (x/100), mixed numbers (a+b/c);
    a number also written in the question becomes the slot of its first occurrence."""
    eq = normalize(equation).replace(" ", "").replace("[", "(").replace("]", ")")
    if eq.startswith("x="):
        eq = eq[2:]
    elif eq.endswith("=x"):
        eq = eq[:-2]
    if "x" in eq or "=" in eq:
        raise EquationError(f"not a single expression for x: {equation!r}")
    slots = {}
    for i, n in enumerate(numbers):
        slots.setdefault(n, SLOT.format(i))
    stack: list[int] = []  # indexes of open "(" groups in `out`
    out: list[list[str]] = []  # groups of tokens: a number, an operator or a closed (...), so % can wrap one
    at = 0
    for m in EQUATION_TOKEN_RE.finditer(eq):
        if m.start() != at:
            raise EquationError(f"unexpected {eq[at:m.start()]!r} in {equation!r}")
        at = m.end()
        number, op = m.groups()
        if number is not None:
            out.append([slots[number]] if number in slots else list(number_expression(number)))
        elif op == "(":
            stack.append(len(out))
            out.append(["("])
        elif op == ")":
            if not stack:
                raise EquationError(f"unbalanced ) in {equation!r}")
            start = stack.pop()
            out[start:] = [sum(out[start:], []) + [")"]]
        elif op == "%":
            if not out or out[-1][-1] in OPERATORS + "(":
                raise EquationError(f"% without a number in {equation!r}")
            out[-1] = ["("] + out[-1] + list("/100)")
        else:
            out.append(["^" if op == "**" else "/" if op == ":" else op])
    if at != len(eq) or stack or not out:
        raise EquationError(f"cannot read {equation!r}")
    return sum(out, [])


def render(tokens: list[str], numbers: list[str]) -> str:
    """Target tokens -> a human-readable expression with the question's numbers written in."""
    lookup = {SLOT.format(i): number_expression(n) for i, n in enumerate(numbers)}
    return "".join(lookup.get(t, t) for t in tokens)
