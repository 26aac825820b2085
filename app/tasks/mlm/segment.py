"""Words from adjacent-character impacts and corpus n-gram statistics, and segmentation metrics (numpy only).

Punctuation and whitespace always end a word, so only the runs between them ("clauses") are probed:
that keeps the masked copies few and short. Runs of ASCII letters and digits stay one word.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from app.tasks.mlm.ngrams import FEATURES as NGRAM_FEATURES
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


FEATURES = ("bias", "mutual", "right_binds_left", "left_binds_right", "has_left", "has_right")


def boundary_features(matrix: np.ndarray) -> np.ndarray:
    """(n-1, 6) features of each pair of neighbours (i, i+1) from log impacts L = log f.

    mutual: (L(i, i+1) + L(i+1, i)) / 2. A weak model's f(i, j) depends much on which j is masked;
    comparing two reads of the same masked character cancels that: right_binds_left =
    L(i, i+1) - L(i+2, i+1) (masking i+1 moves i more than i+2), left_binds_right =
    L(i+1, i) - L(i-1, i); 0 with has_* = 0 at a clause edge."""
    n = len(matrix)
    log = np.log(np.maximum(matrix, 1e-6))
    i = np.arange(n - 1)
    has_left, has_right = i >= 1, i + 2 < n
    right = np.where(has_right, log[i, i + 1] - log[np.minimum(i + 2, n - 1), i + 1], 0.0)
    left = np.where(has_left, log[i + 1, i] - log[np.maximum(i - 1, 0), i], 0.0)
    mutual = (log[i, i + 1] + log[i + 1, i]) / 2
    return np.stack([np.ones(n - 1), mutual, right, left, has_left, has_right], axis=1)


def feature_names(ngrams: bool) -> list[str]:
    """Names of gap_features' columns: the gap's own features, then those of the gaps before and after it."""
    own = list(FEATURES) + (list(NGRAM_FEATURES) if ngrams else [])
    return own + [f"{name}@previous" for name in own[1:]] + [f"{name}@next" for name in own[1:]]


def gap_features(matrix: np.ndarray, ngram_features: np.ndarray | None = None) -> np.ndarray:
    """(n-1, len(feature_names)) per gap between neighbours: the impact features, the corpus n-gram
    features when given, and the same (bias left out) of the neighbouring gaps, zero past the clause's
    edges: a linear rule then sees whether a gap sits inside a tight run of characters."""
    own = boundary_features(matrix)
    if ngram_features is not None:
        own = np.concatenate([own, ngram_features], axis=1)
    padded = np.pad(own[:, 1:], ((1, 1), (0, 0)))
    return np.concatenate([own, padded[:-2], padded[2:]], axis=1)


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
