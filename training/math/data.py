"""Math word problems -> (question pieces, expression tokens) pairs.

Training: Math23K (all of it: its texts were already in the BERT's pretraining stream), and optionally our
"train" share of Ape210K valid. HMWP has no single-expression problems (its equations are systems in x),
so it does not fit. md5(id) splits Ape210K valid into our dev share (model selection, a fifth), train
share (two fifths) and test share (reporting, two fifths; never trained on).
Samples whose expression does not evaluate to the given answer are dropped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from app.tasks.math_eval import ExpressionError, evaluate, parse_answer, same_answer
from app.tasks.math_text import EquationError, expression_tokens, render, slot_question
from training.extract.data import read_jsonl
from training.paths import DATA

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


def ape_split(problem_id: str) -> str:
    """Our split of Ape210K valid: a fifth "dev" (choices made while training), then "train" and "test"
    halves of the rest."""
    bucket = int(hashlib.md5(str(problem_id).encode()).hexdigest(), 16)
    return "dev" if bucket % 5 == 0 else "train" if bucket // 5 % 2 == 0 else "test"


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
