"""Perturbed Masking (Wu et al., ACL 2020): how much character j affects character i in a masked LM.

f(i, j) = || H(x with i masked)_i - H(x with i and j masked)_i ||, H a chosen layer's hidden states.
Every masked copy of a sentence is one model row ([CLS] text [SEP]), so the copies of many requests
share the batcher's batches. numpy only: serving and training use the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from app.text import CharVocab


def adjacent_pairs(n: int) -> list[tuple[int, int]]:
    """Every pair of neighbours: all that segmentation needs (2n - 1 rows, not n^2)."""
    return [(i, i + 1) for i in range(n - 1)]


def all_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def masked_rows(ids: np.ndarray, vocab: CharVocab, pairs: Iterable[tuple[int, int]]) -> tuple[list[np.ndarray], list]:
    """Token rows for the perturbations: one per masked position (the singles), then one per pair.

    The copy with i and j masked serves both f(i, j) (read at i) and f(j, i) (read at j), so a pair
    is unordered. Returns the rows and their keys: `i` for a single, `(i, j)` for a pair."""
    pairs = list(pairs)
    base = np.concatenate([[vocab.cls_id], ids, [vocab.sep_id]]).astype(np.int64)
    keys: list = sorted({i for pair in pairs for i in pair}) + pairs
    rows = []
    for key in keys:
        row = base.copy()
        row[np.asarray(key) + 1] = vocab.mask_id  # +1: after [CLS]
        rows.append(row)
    return rows, keys


def impacts(keys: list, hidden: list[np.ndarray]) -> dict[tuple[int, int], float]:
    """Hidden states (T+2, H) of every row, in the order of `keys` -> f(i, j) and f(j, i) for every pair."""
    single = {k: h[k + 1] for k, h in zip(keys, hidden, strict=True) if isinstance(k, int)}
    found = {}
    for key, h in zip(keys, hidden, strict=True):
        if not isinstance(key, int):
            i, j = key
            found[i, j] = float(np.linalg.norm(single[i] - h[i + 1]))
            found[j, i] = float(np.linalg.norm(single[j] - h[j + 1]))
    return found


def impact_matrix(n: int, found: dict[tuple[int, int], float]) -> np.ndarray:
    """(n, n) with F[i, j] = f(i, j) (0 on the diagonal and for pairs not computed)."""
    matrix = np.zeros((n, n), np.float64)
    for (i, j), value in found.items():
        matrix[i, j] = value
    return matrix


def word_matrix(chars: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Character-level impacts -> word-level by averaging over the characters of both words."""
    m = len(spans)
    words = np.zeros((m, m), np.float64)
    for a, (s1, e1) in enumerate(spans):
        for b, (s2, e2) in enumerate(spans):
            if a != b:
                words[a, b] = chars[s1:e1, s2:e2].mean()
    return words
