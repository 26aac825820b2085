"""Integrated Gradients for the /qa reader: which question and passage characters made it point at this answer?

The explained score is log P(start) + log P(end) of the answer span in one passage (one reader window, so
the passage is at most the window long). The gradient graph takes ids and the path point alpha and returns
gradient . (x - x') per character; IG is the quadrature of those terms over alpha.
"""

from __future__ import annotations

import reprlib

import numpy as np

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import Section, check_text
from app.tasks.explain import Attribution, checked_steps, quadrature
from app.tasks.qa.decode import question_ids
from app.text import CharVocab

BASELINES = ("zero", "pad", "mask")
SCORE = "log P(start) + log P(end)"


class QAExplainSection(Section):
    steps: int  # default integration steps
    max_steps: int
    max_length: int  # passage characters: one reader window


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def answer_span(passage: str, target: dict) -> tuple[int, int]:
    """[start, end) of the answer: `span` as /qa returns it, else the first occurrence of `answer`."""
    answer, span = target.get("answer"), target.get("span")
    if answer is not None and not isinstance(answer, str):
        raise InvalidInput(f"target.answer: expected a string, got {_kind(answer)}")
    if span is not None:
        if (not isinstance(span, list) or len(span) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in span)):
            raise InvalidInput(f"target.span: expected [start, end] integers, got "
                               f"{reprlib.repr(span) if isinstance(span, list) else _kind(span)}")
        start, end = span
        if not 0 <= start < end <= len(passage):
            raise InvalidInput(f"target.span: {span} is not a non-empty span of the {len(passage)}-character text")
        if answer is not None and passage[start:end] != answer:
            raise InvalidInput(f"target.answer: {reprlib.repr(answer)} is not the text at span {span}")
        return start, end
    if not answer:
        raise InvalidInput("target: give the answer (a non-empty string) or its span [start, end]")
    start = passage.find(answer)
    if start < 0:
        raise InvalidInput(f"target.answer: {reprlib.repr(answer)} does not occur in the text")
    return start, start + len(answer)


class QAExplainer:
    def __init__(self, model: ModelHandle, config: QAExplainSection, vocab: CharVocab, question_length: int,
                 max_answer: int):
        self.model, self.vocab, self.question_length, self.max_answer = model, vocab, question_length, max_answer
        self.default_steps, self.max_steps, self.max_length = config.steps, config.max_steps, config.max_length

    def baseline(self, name: str) -> tuple[int, float]:
        """(baseline_id, baseline_scale): the baseline embedding is scale x the table's row of that id."""
        if name == "zero":
            return 0, 0.0
        if name in ("pad", "mask"):
            return (self.vocab.pad_id if name == "pad" else self.vocab.mask_id), 1.0
        raise InvalidInput(f"baseline: {name!r} is not one of {', '.join(BASELINES)}")

    async def explain(self, text: str, target: dict, deadline: float, steps: int | None = None,
                      method: str = "trapezoid", baseline: str = "zero") -> dict:
        steps = checked_steps(steps, method, self.default_steps, self.max_steps)
        if not isinstance(target, dict):
            raise InvalidInput(f"target: expected an object, got {_kind(target)}")
        question = target.get("question")
        if not isinstance(question, str):
            raise InvalidInput(f"target.question: expected a string, got {_kind(question)}")
        check_text(question, "target.question", self.question_length, "limits.max_question_length")
        check_text(text, "text", self.max_length, "explain.max_length")
        start, end = answer_span(text, target)
        if end - start > self.max_answer:
            raise InvalidInput(f"target.span: {end - start} characters, over the model's reading.max_answer of "
                               f"{self.max_answer}")
        base_id, base_scale = self.baseline(baseline)
        alphas, weights = quadrature(steps, method)
        shared = {"question_ids": question_ids(self.vocab, question, self.question_length),
                  "passage_ids": self.vocab.encode(text), "span": np.array([start, end - 1], np.int64),
                  "baseline_id": np.array(base_id, np.int64), "baseline_scale": np.array(base_scale, np.float32)}
        rows = [{**shared, "alpha": np.array(a, np.float32)} for a in alphas]
        async with self.model.admit({"gradient": len(rows)}, deadline) as permit:
            outputs = await self.model.stage("gradient").submit(rows, deadline, permit)
        terms = np.concatenate([np.stack([o["question_terms"][: len(question)] for o in outputs]),
                                np.stack([o["passage_terms"] for o in outputs])], axis=1).astype(np.float64)
        scores = [float(o["score"]) for o in outputs]
        result = Attribution(np.tensordot(weights, terms, axes=1), scores[-1], scores[0])
        return {
            "task": "qa",
            "target": {"question": question, "answer": text[start:end], "span": [start, end],
                       "question_characters": len(question), "score_explained": SCORE},
            "characters": list(question) + list(text),
            "attributions": [round(float(a), 6) for a in result.attributions],
            "normalized": [round(float(a), 4) for a in result.normalized],
            "score": result.score, "baseline_score": result.baseline_score, "delta": result.delta,
            "steps": steps, "method": method, "baseline": baseline,
        }
