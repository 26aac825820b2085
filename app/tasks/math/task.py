"""POST /solve_math: a word problem -> an expression by constrained beam search -> an exact answer.

The question is encoded once (its keys and values cached); then every beam step of every request is
one batcher row per beam (one new token against its cache), so concurrent requests decode in the
same batches (continuous batching). Every candidate is evaluated by the safe evaluator; among those
that evaluate, a reranker (app/tasks/math/rerank.py) picks the answer.
"""

from __future__ import annotations

import numpy as np

from app.runtime.admission import Permit
from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import ModelFile, Section, read_config
from app.tasks.math.decode import Grammar, beam_search
from app.tasks.math.evaluator import ExpressionError, evaluate, format_answer
from app.tasks.math.rerank import Candidate, Reranker
from app.tasks.math.text import render, source_ids
from app.text import CharVocab
from app.text.subword import SubwordTokenizer


class MathLimits(Section):
    max_question_tokens: int  # question pieces (a number counts as one)
    max_beam_size: int


class DecodingSection(Section):
    beam_size: int  # default beams per step
    max_expression_tokens: int  # a beam that has not ended by then is dropped


class RerankSection(Section):
    weights: list[float]
    features: list[str]
    rule: str = ""


class MathConfig(ModelFile):
    limits: MathLimits
    decoding: DecodingSection
    rerank: RerankSection | None = None  # without it: the first candidate worth more than zero
    # a pretrained encoder's tokenizer.json: the question's text read in its word pieces (absent: characters);
    # `vocab` is still the math vocabulary (the encoder's, grown by the slot and expression tokens)
    pieces: str | None = None


class MathTask:
    kind = "math"
    explainer = None

    def __init__(self, model: ModelHandle):
        config = read_config(model, MathConfig)
        self.model, self.limits = model, config.limits
        self.vocab = CharVocab.load(model.directory / config.vocab)
        self.pieces = SubwordTokenizer.load(model.directory / config.pieces) if config.pieces else None
        self.grammar = Grammar(self.vocab)
        self.beam_size = config.decoding.beam_size
        self.max_expression = config.decoding.max_expression_tokens
        self.step_rows = self.max_expression / 2  # step rows per beam, learned from the requests served
        self.reranker = Reranker(config.rerank.weights) if config.rerank else None

    def source_ids(self, question: str) -> tuple[list[int], list[str]]:
        """[CLS] question-with-slots [SEP] as ids, and the numbers in the slots."""
        if not question.strip():
            raise InvalidInput("question: empty text")
        ids, numbers = source_ids(question, self.vocab, self.pieces)
        if len(ids) - 2 > self.limits.max_question_tokens:
            raise InvalidInput(f"question: {len(ids) - 2} tokens (numbers count as one), over the model's "
                               f"limits.max_question_tokens of {self.limits.max_question_tokens}")
        return ids, numbers

    async def solve(self, question: str, beam_size: int | None, deadline: float) -> dict:
        candidates = await self.candidates(question, beam_size, deadline)
        return answer_from(candidates, question, f"no complete expression within {self.max_expression} tokens",
                           self.reranker)

    async def candidates(self, question: str, beam_size: int | None, deadline: float) -> list[Candidate]:
        """The finished beams, best first."""
        beam_size = self.beam_size if beam_size is None else beam_size
        if not 1 <= beam_size <= self.limits.max_beam_size:
            raise InvalidInput(f"beam_size: {beam_size}, expected 1 to the model's limits.max_beam_size of "
                               f"{self.limits.max_beam_size}")
        source, numbers = self.source_ids(question)
        # Admission covers every beam step, estimated from the step rows beams have taken so far.
        steps = {"rows": 0}
        async with self.model.admit({"encoder": 1, "step": round(beam_size * self.step_rows)}, deadline) as permit:
            found = await self._beams(source, len(numbers), beam_size, deadline, permit, steps)
        self.step_rows = 0.9 * self.step_rows + 0.1 * steps["rows"] / beam_size
        out = []
        for h in found:
            tokens = [self.vocab.tokens[t] for t in h.tokens]
            out.append(Candidate(render(tokens, numbers), h.score, tuple(tokens), len(numbers)))
        return out

    async def _beams(self, source: list[int], slots: int, beam_size: int, deadline: float, permit: Permit,
                     steps: dict[str, int]):
        (encoded,) = await self.model.stage("encoder").submit([{"token_ids": np.array(source, dtype=np.int64)}],
                                                              deadline, permit)
        stepper = self.model.stage("step")

        async def step(caches: list[tuple[np.ndarray, np.ndarray]], tokens: list[int]):
            rows = [{"token": np.int64(token), "position": np.int64(keys.shape[2]), "past_keys": keys,
                     "past_values": values, "past_mask": np.ones(keys.shape[2], dtype=bool)}
                    for (keys, values), token in zip(caches, tokens, strict=True)]
            outputs = await stepper.submit(rows, deadline, permit)
            steps["rows"] += len(rows)
            grown = [(np.concatenate([keys, out["key"][:, :, None]], axis=2),
                      np.concatenate([values, out["value"][:, :, None]], axis=2))
                     for (keys, values), out in zip(caches, outputs, strict=True)]
            return [out["log_probs"] for out in outputs], grown

        return await beam_search(encoded["log_probs"], (encoded["keys"], encoded["values"]), step, self.grammar,
                                 slots, beam_size, self.max_expression)


def answer_from(candidates: list[Candidate], question: str, none_found: str, reranker: Reranker | None = None) -> dict:
    """The answer of the best candidate expression that evaluates, each candidate listed with its own answer
    or error. "Best": the reranker's choice among those that evaluate; without one, the first worth more
    than zero (word problems ask for positive quantities: +1 point on our Ape210K dev share), else the
    first. When none evaluates: answer null and the reason."""
    listed, values = [], []
    for candidate in (Candidate(*c) for c in candidates):
        shown = {"expression": candidate.expression, "answer": None, "score": round(candidate.score, 4), "error": None}
        try:
            value = evaluate(candidate.expression)
            shown["answer"] = format_answer(value, question)["answer"]
        except ExpressionError as exc:
            value, shown["error"] = None, str(exc)
        values.append(value)
        listed.append(shown)
    valid = [i for i, v in enumerate(values) if v is not None]
    if not valid:
        reason = "no candidate could be evaluated: " + "; ".join(c["error"] for c in listed) if listed else none_found
        return {"expression": listed[0]["expression"] if listed else None, "answer": None, "answer_value": None,
                "fraction": None, "decimal": None, "reason": reason, "candidates": listed}
    if reranker is not None:
        best = reranker.choose(question, candidates, values)
    else:
        best = next((i for i in valid if values[i] > 0), valid[0])
    return {"expression": listed[best]["expression"], **format_answer(values[best], question), "reason": None,
            "candidates": listed}
