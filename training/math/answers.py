"""Reading gold Ape210K answers and comparing them with predicted ones (scoring only; serving never needs it)."""

from __future__ import annotations

import re
from fractions import Fraction

from app.tasks.math.evaluator import evaluate


def parse_answer(text: str) -> Fraction:
    """An Ape210K answer ("45", "11/20", "3(1/2)", "25%", "((1)/(5))", "2.5") as an exact value."""
    t = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", text.strip().replace(" ", ""))
    mixed = re.fullmatch(r"(\d+(?:\.\d+)?)(\(.+\))", t)  # 3(1/2), 7((2)/(3))
    if mixed:
        return evaluate(mixed[1]) + evaluate(mixed[2])
    return evaluate(t)


def same_answer(predicted: Fraction, gold: Fraction) -> bool:
    """Equal as exact rationals, or within 1e-4 relative (answers written as rounded decimals)."""
    return predicted == gold or abs(predicted - gold) <= Fraction(1, 10_000) * max(abs(gold), Fraction(1, 10**6))
