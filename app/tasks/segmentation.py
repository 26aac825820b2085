"""Words from adjacent-character impacts, and segmentation metrics (numpy only).

Punctuation and whitespace always end a word, so only the runs between them ("clauses") are probed:
that keeps the masked copies few and short. Runs of ASCII letters and digits stay one word.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np

from app.text import normalize


def is_break(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PSZ"


def clauses(text: str, max_length: int) -> list[tuple[int, int]]:
    """[start, end) runs of non-punctuation characters, each at most `max_length` long."""
    runs, start = [], None
    for i, c in enumerate(text + " "):
        if is_break(c):
            if start is not None:
                runs += [(s, min(s + max_length, i)) for s in range(start, i, max_length)]
                start = None
        elif start is None:
            start = i
    return runs


def join_scores(matrix: np.ndarray) -> np.ndarray:
    """(n-1,) mutual impact of each pair of neighbours: (f(i, i+1) + f(i+1, i)) / 2."""
    n = len(matrix)
    i = np.arange(n - 1)
    return (matrix[i, i + 1] + matrix[i + 1, i]) / 2


SCALES = ("absolute", "relative")


def scaled(scores: list[np.ndarray], scale: str) -> list[np.ndarray]:
    """"relative": divide by the text's mean neighbour score, so one threshold fits texts whose impacts
    run high or low overall; "absolute": as they are."""
    if scale == "absolute":
        return scores
    every = np.concatenate([s for s in scores if len(s)] or [np.ones(1)])
    return [s / max(float(every.mean()), 1e-9) for s in scores]


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def words_from_scores(text: str, runs: list[tuple[int, int]], scores: list[np.ndarray], threshold: float) -> list[str]:
    """Cut the text into words: within a run, neighbours join when their score is above `threshold`."""
    norm = normalize(text)
    cuts = np.ones(len(text) + 1, bool)  # cuts[i]: a word boundary before character i
    for (start, end), s in zip(runs, scores, strict=True):
        joined = s > threshold
        for k in range(end - start - 1):
            a = start + k
            if joined[k] or (_ascii_alnum(norm[a]) and _ascii_alnum(norm[a + 1])):
                cuts[a + 1] = False
    bounds = np.flatnonzero(cuts)
    words = [text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [w for w in words if not w.isspace()]


def spans(words: Iterable[str]) -> set[tuple[int, int]]:
    out, pos = set(), 0
    for w in words:
        out.add((pos, pos + len(w)))
        pos += len(w)
    return out


def score_segmentation(gold: list[list[str]], predicted: list[list[str]],
                       known_words: set[str] | None = None) -> dict[str, float]:
    """Micro precision/recall/F1 over word spans (whitespace ignored), and recall of out-of-vocabulary
    gold words when the training word list is given."""
    tp = n_gold = n_pred = oov = oov_found = 0
    for g, p in zip(gold, predicted, strict=True):
        g = [w for w in g if w.strip()]
        p = [w for w in p if w.strip()]
        if "".join(g) != "".join(p):
            raise ValueError(f"predicted words do not spell the gold sentence: {''.join(p)!r}")
        gs, ps = spans(g), spans(p)
        tp += len(gs & ps)
        n_gold, n_pred = n_gold + len(gs), n_pred + len(ps)
        if known_words is not None:
            for w, span in zip(g, sorted(gs), strict=True):
                if w not in known_words:
                    oov += 1
                    oov_found += span in ps
    precision, recall = tp / max(n_pred, 1), tp / max(n_gold, 1)
    result = {"precision": precision, "recall": recall,
              "f1": 2 * precision * recall / max(precision + recall, 1e-12)}
    if known_words is not None:
        result["oov_recall"] = oov_found / max(oov, 1)
    return result
