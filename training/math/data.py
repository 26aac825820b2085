"""Math word problems -> (question pieces, expression tokens) pairs.

Training: Math23K (all of it: its texts were already in the BERT's pretraining stream), and optionally our
"train" share of Ape210K valid. HMWP has no single-expression problems (its equations are systems in x),
so it does not fit. md5(id) splits Ape210K valid into our dev share (model selection, a fifth), train
share (two fifths) and test share (reporting, two fifths; never trained on).
Samples whose expression does not evaluate to the given answer are dropped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from app.tasks.math.evaluator import ExpressionError, evaluate
from app.tasks.math.text import NUMBER, OPERATORS, SLOT, number_expression, render, slot_question
from app.text import normalize
from training.common.io import read_jsonl
from training.common.paths import DATA
from training.common.splits import ape_split
from training.math.answers import parse_answer, same_answer

log = logging.getLogger(__name__)

MATH23K = DATA / "math" / "math23k" / "math23k_full.jsonl"
APE_VALID = DATA / "math" / "ape210k" / "valid.ape.json"


@dataclass
class Problem:
    id: str
    question: str
    answer: str
    equation: str | None = None
    pieces: list[str] | None = None
    numbers: list[str] | None = None
    target: list[str] | None = None  # expression tokens, when the equation could be read and checks out


def prepare(record: dict) -> Problem:
    """Slot the question; read the equation into target tokens and keep them only if they give the answer."""
    answer = record["ans"][0] if isinstance(record["ans"], list) else record["ans"]
    p = Problem(str(record["id"]), record["original_text"], str(answer), record.get("equation"))
    q = slot_question(p.question)
    p.pieces, p.numbers = q.pieces, q.numbers
    if p.equation:
        try:
            tokens = expression_tokens(p.equation, q.numbers)
            if same_answer(evaluate(render(tokens, q.numbers)), parse_answer(p.answer)):
                p.target = tokens
        except (EquationError, ExpressionError):
            pass
    return p


def load(path: str | Path, split: str | None = None, limit: int = 0) -> list[Problem]:
    """Problems of a JSON-lines file (Ape210K / Math23K fields), optionally one of our Ape210K splits."""
    records = read_jsonl(path)
    if split:
        records = [r for r in records if ape_split(r["id"]) == split]
    if limit:
        records = records[:limit]
    return [prepare(r) for r in records]


def training_set(paths: list[Path], ape_copies: int = 0) -> list[Problem]:
    """The problems of `paths` plus `ape_copies` copies of our Ape210K train share, those whose equation checks out."""
    problems = [p for path in paths for p in load(path)] + load(APE_VALID, "train") * ape_copies
    kept = [p for p in problems if p.target is not None]
    log.info("training problems: %d of %d kept (equation read and equal to the answer)", len(kept), len(problems))
    return kept


EQUATION_TOKEN_RE = re.compile(rf"({NUMBER})|(\*\*|[-+*/^()%:])")


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
