"""`zhserve eval math`: accuracy of the served solver on Ape210K-style JSON lines.

A problem counts as solved when the returned answer equals the given one as exact rationals, or within
1e-4 relative (answers written as rounded decimals). Also reported: the share of problems whose output
was a valid expression, and the ceiling of the metric on this file: the share of given equations that
our own reading and evaluator turn into the given answer.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from pathlib import Path

from app.runtime.errors import ZhserveError
from app.tasks.math.evaluator import ExpressionError
from training.common.serving import gather_with_progress, served_task
from training.math.answers import parse_answer, same_answer
from training.math.data import load


def solved(result: dict, gold: str) -> bool:
    if result.get("fraction") is None:
        return False
    try:
        return same_answer(Fraction(result["fraction"]), parse_answer(gold))
    except (ExpressionError, ValueError, ZeroDivisionError):
        return False


async def solve_all(models: Path, questions: list[str], beam_size: int | None, concurrency: int = 16) -> list[dict]:
    """Every question through the served task, `concurrency` at a time (their beams share batches)."""
    async with served_task(models, "math") as task:
        async def one(question: str) -> dict:
            try:
                return await task.solve(question, beam_size, time.monotonic() + 600)
            except ZhserveError as exc:  # e.g. a question over the length limit: counted as unsolved
                return {"fraction": None, "reason": exc.message}

        return await gather_with_progress(questions, one, "math", "problem", concurrency)


def evaluate_served(data: list[Path], models: Path, limit: int = 0, split: str | None = None,
                    beam_size: int | None = None) -> dict:
    problems = [p for path in data for p in load(path, split, limit)]
    results = asyncio.run(solve_all(models, [p.question for p in problems], beam_size))
    n = max(len(problems), 1)
    correct = sum(solved(r, p.answer) for r, p in zip(results, problems, strict=True))
    return {"task": "math", "n": len(problems), "accuracy": correct / n,
            "valid_expressions": sum(r.get("fraction") is not None for r in results) / n,
            "gold_equation_ceiling": sum(p.target is not None for p in problems) / n,
            "beam_size": beam_size or "model default"}
