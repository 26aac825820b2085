"""`zhserve train math-reranker`: fit the answer reranker (app/tasks/math/rerank.py) on the served solver's
beams for our Ape210K train share (problems the shipped solver never trained on), measure it on the dev
and test shares against the default rule and the beam's oracle, and write it into the model's model.json.

The beams of each share are kept in `--out` ({share}.json), so a refit does not decode again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from app.runtime.errors import ZhserveError
from app.tasks.math.evaluator import ExpressionError, evaluate
from app.tasks.math.rerank import FEATURES, Candidate, Reranker, candidate_features
from app.tasks.math.task import answer_from
from training.common.export import write_model_json
from training.common.logistic import fit_logistic
from training.common.paths import shown
from training.common.serving import gather_with_progress, served_task
from training.math.answers import parse_answer, same_answer
from training.math.data import load
from training.math.export import measure_shares

log = logging.getLogger(__name__)
SHARES = ("train", "dev", "test")


async def _beams(models: Path, questions: list[str], beam_size: int, concurrency: int = 16) -> list[list]:
    async with served_task(models, "math") as task:
        async def one(question: str) -> list:
            try:
                return [list(c) for c in await task.candidates(question, beam_size, time.monotonic() + 600)]
            except ZhserveError as exc:  # e.g. a question over the length limit: no candidates
                log.warning("no beams for %r: %s", question[:40], exc.message)
                return []

        return await gather_with_progress(questions, one, f"beams of {beam_size}", "problem", concurrency)


def beams(models: Path, data: Path, share: str, beam_size: int, out: Path) -> list[dict]:
    """[{question, answer, candidates}] for one share, decoded once and kept in out/{share}.json."""
    path = out / f"{share}.json"
    if path.exists():
        records = json.loads(path.read_text(encoding="utf-8"))
        if records["beam_size"] == beam_size:
            return records["problems"]
    problems = load(data, share)
    found = asyncio.run(_beams(models, [p.question for p in problems], beam_size))
    records = [{"question": p.question, "answer": p.answer, "candidates": c} for p, c in zip(problems, found,
                                                                                          strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"beam_size": beam_size, "problems": records}, ensure_ascii=False), encoding="utf-8")
    return records


def _value(expression: str) -> Fraction | None:
    try:
        return evaluate(expression)
    except ExpressionError:
        return None


def _gold(answer: str) -> Fraction | None:
    try:
        return parse_answer(answer)
    except (ExpressionError, ValueError, ZeroDivisionError):
        return None


def labelled(records: list[dict]) -> list[tuple[str, list[Candidate], list, np.ndarray]]:
    """Per problem: question, candidates, their values, and which of them equal the gold answer."""
    out = []
    for r in records:
        candidates = [Candidate(*c) for c in r["candidates"]]
        values, gold = [_value(c.expression) for c in candidates], _gold(r["answer"])
        right = np.array([v is not None and gold is not None and same_answer(v, gold) for v in values])
        out.append((r["question"], candidates, values, right))
    return out


def accuracy(problems, reranker: Reranker | None) -> float:
    """Share of problems whose chosen answer is right (the served choice: answer_from)."""
    right = 0
    for question, candidates, values, correct in problems:
        if any(v is not None for v in values):
            chosen = answer_from(candidates, question, "", reranker)["expression"]
            right += any(c.expression == chosen and ok for c, ok in zip(candidates, correct, strict=True))
    return right / max(len(problems), 1)


def fit(problems, l2: float = 1e-3) -> list[float]:
    """Pointwise logistic regression: is this candidate's value the gold answer?"""
    xs, ys = [], []
    for question, candidates, values, right in problems:
        valid = [i for i, v in enumerate(values) if v is not None]
        if valid:
            xs.append(candidate_features(question, candidates, values)[valid])
            ys.append(right[valid])
    return [round(float(w), 6) for w in fit_logistic(np.concatenate(xs), np.concatenate(ys).astype(np.float64), l2)]


def main(models: Path, name: str, data: Path, beam_size: int, out: Path, command: str) -> dict:
    shares = {share: labelled(beams(models, data, share, beam_size, out)) for share in SHARES}
    weights = fit(shares["train"])
    reranker = Reranker(weights)
    report = {"fitted_on": f"{shown(data)}, our train share ({len(shares['train'])} problems, never trained on)",
              "beam_size": beam_size, "command": command}
    for share in ("dev", "test"):
        problems = shares[share]
        report[share] = {"n": len(problems), "reranked": accuracy(problems, reranker),
                         "default_rule": accuracy(problems, None),
                         "oracle": sum(bool(ok.any()) for *_, ok in problems) / max(len(problems), 1)}
    log.info("reranker: %s", report)
    if report["dev"]["reranked"] <= report["dev"]["default_rule"]:
        log.warning("the reranker does not beat the default rule on dev: model.json left as it was")
        return report
    config_path = models / name / "model.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["decoding"]["beam_size"] = beam_size  # the reranker reads beams of this size
    config["rerank"] = {"weights": weights, "features": list(FEATURES),
                        "rule": "the candidate with the largest weights . features among those that evaluate "
                                "(app/tasks/math/rerank.py)"}
    config["quality"]["rerank"] = report
    write_model_json(config_path.parent, config)
    measure_shares(models, name, data)  # the served figures now read the reranked beams
    return report
