"""POST /qa: a question and one or several passages -> windows -> pointer probabilities -> a voted answer.

Every window of every passage is one batcher row, so the windows of concurrent requests share batches.
"No answer" is a legal result: when the best voted score is not above the model's no-answer threshold
(unless the client says the passages hold the answer: allow_no_answer false).

The model.json `tokenizer` says what a row holds: characters (the DGCNN: question ids and window ids
apart) or a pretrained encoder's word pieces ([CLS] question [SEP] window [SEP], app/tasks/qa/pairs.py),
whose per-token pointers are put back on characters before decoding.
"""

from __future__ import annotations

import asyncio

import numpy as np

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import ModelFile, Section, check_text, read_config
from app.tasks.qa import pairs
from app.tasks.qa.decode import Candidate, Window, question_ids, vote, windows
from app.tasks.qa.explain import QAExplainer, QAExplainSection
from app.text import CharVocab
from app.text.subword import SubwordTokenizer
from app.text.tokenization import TokenizerKind


class QALimits(Section):
    max_length: int  # characters per passage (read window by window)
    max_total_length: int  # characters over all passages: what one request can read within the deadline
    max_question_length: int
    max_passages: int


class ReadingSection(Section):
    window: int  # passage characters per model row
    stride: int  # step between windows (they overlap by window - stride >= max_answer)
    max_answer: int  # characters
    question_length: int  # the model's question input, in characters (word pieces: tokens, [CLS] [SEP] included)
    no_answer_threshold: float


class QAConfig(ModelFile):
    tokenizer: TokenizerKind = "chars"  # how `vocab` reads: characters, or a tokenizer.json
    limits: QALimits
    reading: ReadingSection
    explain: QAExplainSection | None = None  # present when a gradient graph was exported


class QATask:
    kind = "qa"

    def __init__(self, model: ModelHandle):
        config = read_config(model, QAConfig)
        self.model, self.limits, self.reading = model, config.limits, config.reading
        if config.tokenizer == "wordpiece":
            self.vocab, self.pieces = None, SubwordTokenizer.load(model.directory / config.vocab)
            self.max_tokens = int(config.stages["reader"]["max_length"])
        else:
            self.vocab, self.pieces = CharVocab.load(model.directory / config.vocab), None
        # a gradient graph is exported for the character reader only
        self.explainer = (QAExplainer(model, config.explain, self.vocab, self.reading.question_length,
                                      self.reading.max_answer)
                          if self.vocab is not None and config.explain is not None and "gradient" in config.stages
                          else None)

    def validate(self, question: str, passages: list[str]) -> None:
        check_text(question, "question", self.limits.max_question_length, "limits.max_question_length")
        if not passages:
            raise InvalidInput("passages: give at least one passage")
        if len(passages) > self.limits.max_passages:
            raise InvalidInput(f"passages: {len(passages)} passages, over the model's limits.max_passages of "
                               f"{self.limits.max_passages}")
        for i, p in enumerate(passages):
            check_text(p, f"passages[{i}]", self.limits.max_length, "limits.max_length")
        if (total := sum(len(p) for p in passages)) > self.limits.max_total_length:
            raise InvalidInput(f"passages: {total} characters in all, over the model's limits.max_total_length of "
                               f"{self.limits.max_total_length}")

    async def candidates(self, question: str, passages: list[str], deadline: float, top_k: int = 5
                         ) -> list[Candidate]:
        self.validate(question, passages)
        r = self.reading
        spans = windows([len(p) for p in passages], r.window, r.stride)
        if self.pieces is not None:
            return await self._candidates_pieces(question, passages, spans, deadline, top_k)
        q_ids = question_ids(self.vocab, question, r.question_length)
        # Each passage encoded once, off the event loop (ids are per character, so windows are slices).
        ids = await asyncio.to_thread(lambda: [self.vocab.encode(p) for p in passages])
        rows = [{"question_ids": q_ids, "passage_ids": ids[w.passage][w.offset : w.offset + w.length]} for w in spans]
        async with self.model.admit({"reader": len(rows)}, deadline) as permit:
            outputs = await self.model.stage("reader").submit(rows, deadline, permit)
        found = [(w, out["probs"]) for w, out in zip(spans, outputs, strict=True)]
        return await asyncio.to_thread(vote, passages, found, r.max_answer, top_k)

    async def _candidates_pieces(self, question: str, passages: list[str], spans: list[Window], deadline: float,
                                 top_k: int) -> list[Candidate]:
        """Word-piece rows: each window tokenised on its own (off the event loop), pointers back on characters."""
        def encode() -> list[pairs.PairRow]:
            q_ids = pairs.question_ids(self.pieces, question, self.reading.question_length)
            texts = [passages[w.passage][w.offset : w.offset + w.length] for w in spans]
            return [pairs.pair_row(q_ids, e, self.max_tokens) for e in self.pieces.encode_batch(texts)]

        rows = await asyncio.to_thread(encode)
        async with self.model.admit({"reader": len(rows)}, deadline) as permit:
            outputs = await self.model.stage("reader").submit(
                [{"token_ids": row.token_ids, "type_ids": row.type_ids} for row in rows], deadline, permit)

        def decode() -> list[Candidate]:
            found = [(w, pairs.char_probs(np.asarray(out["probs"])[: len(row.token_ids)], row.offsets, w.length))
                     for w, row, out in zip(spans, rows, outputs, strict=True)]
            return vote(passages, found, self.reading.max_answer, top_k)

        return await asyncio.to_thread(decode)

    async def answer(self, question: str, passages: list[str], deadline: float, top_k: int = 5,
                     allow_no_answer: bool = True) -> dict:
        candidates = await self.candidates(question, passages, deadline, top_k)
        threshold = self.reading.no_answer_threshold if allow_no_answer else -1.0
        best = candidates[0] if candidates and candidates[0].score > threshold else None
        return {
            "answer": best.answer if best else None,
            "score": best.score if best else (candidates[0].score if candidates else 0.0),
            "passage_index": best.passage if best else None,
            "span": [best.start, best.end] if best else None,
            "no_answer_threshold": self.reading.no_answer_threshold,
            "candidates": [{"answer": c.answer, "score": round(c.score, 6), "passage_index": c.passage,
                            "span": [c.start, c.end]} for c in candidates],
        }
