"""CMRC 2018-style EM and F1, and the PyTorch reader used for checkpoint selection during training.

Scoring follows the CMRC 2018 evaluation script: punctuation and spaces removed, Chinese characters
one token each, runs of Latin letters and digits one token; F1 from the longest common subsequence;
the best score over the gold answers. A question no passage answers is right only when the answer is null.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from app.tasks.qa.decode import Candidate, question_ids, vote, windows
from app.text import CharVocab
from training.qa.data import Question

_LATIN = re.compile(r"[a-z0-9]+|\S")


def _is_punctuation(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PSZ"


def tokens(text: str) -> list[str]:
    kept = "".join(" " if _is_punctuation(c) else c for c in text.lower())
    return _LATIN.findall(kept)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def f1(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    common = _lcs(p, g)
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact(prediction: str, gold: str) -> float:
    return float(tokens(prediction) == tokens(gold))


def score(predictions: Iterable[str | None], golds: Iterable[list[str]]) -> dict[str, float]:
    """Mean EM and F1 (0..1); a gold [] means "no answer"."""
    ems, f1s = [], []
    for prediction, gold in zip(predictions, golds, strict=True):
        if not gold:
            right = float(not prediction)
            ems.append(right)
            f1s.append(right)
            continue
        prediction = prediction or ""
        ems.append(max(exact(prediction, g) for g in gold))
        f1s.append(max(f1(prediction, g) for g in gold))
    n = len(ems)
    return {"em": round(sum(ems) / n, 4) if n else 0.0, "f1": round(sum(f1s) / n, 4) if n else 0.0}


class TorchReader:
    """Runs a DGCNNReader over questions' passage windows in batches; decodes as serving does."""

    def __init__(self, net, vocab: CharVocab, window: int, stride: int, max_answer: int, batch_size: int = 64):
        import torch

        self.torch, self.net, self.vocab = torch, net.eval(), vocab
        self.window, self.stride, self.max_answer, self.batch_size = window, stride, max_answer, batch_size

    def candidates(self, questions: list[Question]) -> list[list[Candidate]]:
        torch, length = self.torch, self.net.config.question_length
        rows = []  # (question index, window)
        for k, q in enumerate(questions):
            rows += [(k, w) for w in windows([len(p) for p in q.passages], self.window, self.stride)]
        rows.sort(key=lambda r: r[1].length)
        q_ids = [question_ids(self.vocab, q.question, length) for q in questions]
        found: list[list] = [[] for _ in questions]
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i : i + self.batch_size]
            qs = np.stack([q_ids[k] for k, _ in chunk])
            ps = np.zeros((len(chunk), max(w.length for _, w in chunk)), np.int64)
            for b, (k, w) in enumerate(chunk):
                ps[b, : w.length] = self.vocab.encode(questions[k].passages[w.passage][w.offset : w.offset + w.length])
            with torch.no_grad():
                device = next(self.net.parameters()).device
                probs = torch.sigmoid(self.net(torch.from_numpy(qs).to(device),
                                               torch.from_numpy(ps).to(device))).cpu().numpy()
            for b, (k, w) in enumerate(chunk):
                found[k].append((w, probs[b, : w.length]))
        return [vote(q.passages, f, self.max_answer) for q, f in zip(questions, found, strict=True)]


def best_answers(candidates: list[list[Candidate]], threshold: float = -1.0) -> list[str | None]:
    """The top candidate's answer, or None when its score is not above the no-answer threshold
    (the default, -1, always answers)."""
    return [c[0].answer if c and c[0].score > threshold else None for c in candidates]


def evaluate_torch(reader: TorchReader, questions: list[Question], threshold: float = -1.0) -> dict[str, float]:
    return score(best_answers(reader.candidates(questions), threshold), (q.gold for q in questions))


async def answer_served(models: Path, questions: list[Question], concurrency: int = 8) -> list[dict]:
    """Every question through the served task in-process, `concurrency` at a time (their windows share
    batches). A question the model refuses (e.g. over the length limit) counts as answered null."""
    import time

    from app.runtime.errors import ZhserveError
    from training.common.serving import gather_with_progress, served_task

    async with served_task(models, "qa") as task:
        async def one(q: Question) -> dict:
            try:
                return await task.answer(q.question, q.passages, time.monotonic() + 600,
                                         allow_no_answer=q.may_be_unanswerable)
            except ZhserveError as exc:
                return {"answer": None, "reason": exc.message}

        return await gather_with_progress(questions, one, "qa", "question", concurrency)


def evaluate_served(data: list[Path], models: Path, limit: int = 0, split: str | None = None) -> dict:
    """`zhserve eval qa`: EM and F1 of the served answers on SQuAD/CMRC, WebQA or multi-passage sample JSON.
    Formats that promise an answer (SQuAD 1.1, CMRC 2018) are asked with allow_no_answer false."""
    import asyncio

    from training.common.splits import qa_split
    from training.qa.data import load

    questions = [q for path in data for q in load(path)]
    if split:
        questions = [q for q in questions if qa_split(q.id) == split]
    if limit:
        questions = questions[:limit]
    results = asyncio.run(answer_served(models, questions))
    scores = score([r["answer"] for r in results], (q.gold for q in questions))
    return {"task": "qa", "n": len(questions), **scores,
            "answered": round(sum(r["answer"] is not None for r in results) / max(1, len(results)), 4),
            "no_answer_questions": sum(not q.gold for q in questions)}
