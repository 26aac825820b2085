"""Choose the answer among the beam's candidates by more than their score. numpy only.

The right answer is often in the beam but not on top of it (our Ape210K dev share: 0.39 of problems
have it among 8 beams, 0.25 on top). A linear score over what a checker would look at (the model's
log-probability and rank, how many candidates agree on the value, whether the value is positive, whole
or a fraction where the question asks for a count or a percentage, its size against the question's
numbers, how many of the question's numbers the expression uses) picks it better. The weights are a
logistic regression fitted by `zhserve train math-reranker` on problems the solver never trained on.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from app.tasks.math.evaluator import COUNT, PERCENT_RE, terminates

COUNT_RE = re.compile(COUNT)
NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
OPERATORS = frozenset("+-*/^")
RANKS = 4  # rank 0, 1, 2, 3 and after


class Candidate(NamedTuple):
    expression: str
    score: float  # sum of the expression tokens' log-probabilities
    tokens: tuple[str, ...] = ()  # the expression as generated: the question's numbers as slots [N0], [N1], ...
    numbers: int = 0  # how many numbers the question has


FEATURES = ("bias", "score", "score_below_best", *(f"rank_{r}" for r in range(RANKS)), "agreeing_share",
            "agreeing_mass", "positive", "whole", "below_one", "terminating", "count_question*whole",
            "count_question*not_whole", "percent_question*below_one", "log10_size", "log10_size_vs_numbers",
            "numbers_used", "numbers_left_out", "constants", "operators")


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -12.0


def candidate_features(question: str, candidates: list[Candidate], values: list[Fraction | None]) -> np.ndarray:
    """(len(candidates), len(FEATURES)); rows of candidates that did not evaluate are zeros."""
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    valid = [i for i, v in enumerate(values) if v is not None]
    mass = np.exp(scores - scores.max()) if len(scores) else scores
    counts_things, asks_percent = bool(COUNT_RE.search(question)), bool(PERCENT_RE.search(question))
    largest = max((float(n) for n in NUMBER_RE.findall(question)), default=1.0)
    out = np.zeros((len(candidates), len(FEATURES)))
    for i in valid:
        c, v = candidates[i], values[i]
        agreeing = [j for j in valid if values[j] == v]
        whole, size = v.denominator == 1, abs(float(v))
        slots = {t for t in c.tokens if t.startswith("[N")}
        used = len(slots) / c.numbers if c.numbers else 1.0
        constants = len("".join(t if t.isdigit() or t == "." else " " for t in c.tokens).split())  # spelled out
        rank = np.eye(RANKS)[min(i, RANKS - 1)]
        out[i] = [1.0, c.score, c.score - scores.max(), *rank, len(agreeing) / len(valid),
                  mass[agreeing].sum() / mass[valid].sum(), v > 0, whole, 0 < v < 1, terminates(v),
                  counts_things and whole, counts_things and not whole, asks_percent and 0 < v < 1,
                  _log10(size), _log10(size) - _log10(largest), used, 1.0 - used, constants,
                  sum(t in OPERATORS for t in c.tokens)]
    return out


class Reranker:
    def __init__(self, weights: list[float]):
        self.weights = np.asarray(weights, dtype=np.float64)
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"rerank.weights: {len(self.weights)} values for {len(FEATURES)} features")

    def choose(self, question: str, candidates: list[Candidate], values: list[Fraction | None]) -> int:
        """Index of the best candidate among those that evaluated (there must be one)."""
        candidates = [Candidate(*c) for c in candidates]
        scores = candidate_features(question, candidates, values) @ self.weights
        return max((i for i, v in enumerate(values) if v is not None), key=lambda i: scores[i])
