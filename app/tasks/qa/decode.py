"""Reading comprehension decoding (numpy only): passages -> windows -> best spans -> voted answers.

A passage longer than the model's window is read in overlapping windows; the overlap is at least the
longest answer, so every answer lies whole inside some window. Shared by serving and by evaluation
during training, so both decode identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.text import CharVocab


@dataclass(frozen=True)
class Window:
    passage: int  # index of the passage in the request
    offset: int  # where the window starts in its passage
    length: int


@dataclass(frozen=True)
class Candidate:
    answer: str
    score: float
    passage: int
    start: int  # in the passage
    end: int  # exclusive


def question_ids(vocab: CharVocab, question: str, length: int) -> np.ndarray:
    """The question as the reader takes it: ids padded (or cut) to its fixed `length`."""
    ids = np.zeros(length, np.int64)
    encoded = vocab.encode(question)[:length]
    ids[: len(encoded)] = encoded
    return ids


def windows(lengths: list[int], size: int, stride: int) -> list[Window]:
    """Cover every passage with windows of at most `size` characters, `stride` apart."""
    out = []
    for p, n in enumerate(lengths):
        offset = 0
        while True:
            out.append(Window(p, offset, min(size, n - offset)))
            if offset + size >= n:
                break
            offset += stride
    return out


def best_span(probs: np.ndarray, max_answer: int) -> tuple[int, int, float]:
    """probs (T, 2) start/end probabilities -> (start, end inclusive, score) maximising
    P(start) * P(end) with start <= end < start + max_answer."""
    start, end = probs[:, 0], probs[:, 1]
    best = (0, 0, -1.0)
    for width in range(min(max_answer, len(start))):
        scores = start[: len(start) - width] * end[width:]
        i = int(scores.argmax())
        if scores[i] > best[2]:
            best = (i, i + width, float(scores[i]))
    return best


def vote(passages: list[str], found: list[tuple[Window, np.ndarray]], max_answer: int, top_k: int = 5
         ) -> list[Candidate]:
    """Each window's best span; an answer's score is its best score within each passage, summed over the
    passages that give it (multi-passage voting: an answer several passages agree on wins)."""
    per_passage: dict[tuple[str, int], Candidate] = {}
    for w, probs in found:
        i, j, score = best_span(probs, max_answer)
        start, end = w.offset + i, w.offset + j + 1
        raw = passages[w.passage][start:end]
        answer = raw.strip()
        if not answer:
            continue
        start += len(raw) - len(raw.lstrip())  # the span spells the answer exactly
        end = start + len(answer)
        key = (answer, w.passage)
        if key not in per_passage or score > per_passage[key].score:
            per_passage[key] = Candidate(answer, score, w.passage, start, end)
    voted: dict[str, Candidate] = {}
    for c in sorted(per_passage.values(), key=lambda c: -c.score):
        if c.answer in voted:  # keep the best passage's span, add the score
            first = voted[c.answer]
            voted[c.answer] = Candidate(first.answer, first.score + c.score, first.passage, first.start, first.end)
        else:
            voted[c.answer] = c
    return sorted(voted.values(), key=lambda c: -c.score)[:top_k]
