"""POST /qa: a question and one or several passages -> windows -> pointer probabilities -> a voted answer.

Every window of every passage is one batcher row, so the windows of concurrent requests share batches.
"No answer" is a legal result: when the best voted score is not above the model's no-answer threshold
(unless the client says the passages hold the answer: allow_no_answer false).
"""

from __future__ import annotations

import asyncio

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.qa_decode import Candidate, question_ids, vote, windows
from app.text import CharVocab


class QATask:
    def __init__(self, model: ModelHandle):
        config = model.config
        self.model = model
        self.vocab = CharVocab.load(model.directory / config["vocab"])
        reading = config["reading"]
        self.question_length = int(reading["question_length"])
        self.window, self.stride = int(reading["window"]), int(reading["stride"])
        self.max_answer = int(reading["max_answer"])
        self.threshold = float(reading["no_answer_threshold"])
        self.max_passages = int(reading["max_passages"])
        self.max_length = int(config["max_length"])  # characters per passage

    def validate(self, question: str, passages: list[str]) -> None:
        if not question.strip():
            raise InvalidInput("question: empty text")
        if len(question) > self.question_length:
            raise InvalidInput(f"question: {len(question)} characters, over the model's limit of "
                               f"{self.question_length}")
        if not passages:
            raise InvalidInput("passages: give at least one passage")
        if len(passages) > self.max_passages:
            raise InvalidInput(f"passages: {len(passages)} passages, over the limit of {self.max_passages}")
        for i, p in enumerate(passages):
            if not p.strip():
                raise InvalidInput(f"passages[{i}]: empty text")
            if len(p) > self.max_length:
                raise InvalidInput(f"passages[{i}]: {len(p)} characters, over the model's max_length "
                                   f"{self.max_length}")

    async def candidates(self, question: str, passages: list[str], deadline: float, top_k: int = 5
                         ) -> list[Candidate]:
        self.validate(question, passages)
        q_ids = question_ids(self.vocab, question, self.question_length)
        spans = windows([len(p) for p in passages], self.window, self.stride)
        rows = [{"question_ids": q_ids,
                 "passage_ids": self.vocab.encode(passages[w.passage][w.offset : w.offset + w.length])}
                for w in spans]
        outputs = await self.model.stage("reader").submit(rows, deadline)
        found = [(w, out["probs"]) for w, out in zip(spans, outputs, strict=True)]
        return await asyncio.to_thread(vote, passages, found, self.max_answer, top_k)

    async def answer(self, question: str, passages: list[str], deadline: float, top_k: int = 5,
                     allow_no_answer: bool = True) -> dict:
        candidates = await self.candidates(question, passages, deadline, top_k)
        threshold = self.threshold if allow_no_answer else -1.0
        best = candidates[0] if candidates and candidates[0].score > threshold else None
        return {
            "model": self.model.name, "version": self.model.version,
            "answer": best.answer if best else None,
            "score": best.score if best else (candidates[0].score if candidates else 0.0),
            "passage_index": best.passage if best else None,
            "span": [best.start, best.end] if best else None,
            "no_answer_threshold": self.threshold,
            "candidates": [{"answer": c.answer, "score": round(c.score, 6), "passage_index": c.passage,
                            "span": [c.start, c.end]} for c in candidates],
        }
