"""Corpus n-gram statistics of word boundaries, read next to Perturbed Masking's impacts.

Two classic unsupervised signals: the pointwise mutual information of two neighbours, and the
branching entropy of the n-grams either side of the gap (Jin and Tanaka-Ishii 2006; Magistry and
Sagot's nVBE): where the next (or previous) character becomes hard to predict, a word tends to end.
numpy only; n-grams are keyed by a rolling hash of character ids shared with training/mlm/ngrams.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

HASH = np.int64(1_000_003)
MAX_N = 3


def ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of n ids (wrapping int64 arithmetic), shape (len(ids) - n + 1,)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < n:
        return np.zeros(0, np.int64)
    keys = ids[: len(ids) - n + 1].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            keys = keys * HASH + ids[j: len(ids) - n + 1 + j]
    return keys


def vocab_digest(tokens: list[str]) -> str:
    """Statistics are only valid for the vocabulary whose ids they count."""
    return hashlib.md5("\n".join(tokens).encode("utf-8")).hexdigest()


FEATURES = ("pmi", *(f"{side}_{name}_{n}" for n in range(1, MAX_N + 1)
                     for side in ("right", "left") for name in ("entropy", "known")))


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    if len(keys) == 0:
        return np.full(len(query), fill, dtype=np.float64), np.zeros(len(query), bool)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[at] == query
    return np.where(found, values[at], fill), found


class NgramStats:
    """Loaded from the .npz that training/mlm/ngrams.py writes."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.total = float(arrays["total"])
        self.unigrams = arrays["unigram_counts"].astype(np.float64)

    @classmethod
    def load(cls, path: str | Path) -> NgramStats:
        with np.load(path) as f:
            return cls({k: f[k] for k in f.files})

    @property
    def digest(self) -> str:
        return str(self.arrays["vocab_digest"])

    @staticmethod
    def _windows(ids: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Key of ids[s:s+n] for each start s, and whether that window lies inside `ids` (keys of windows
        outside are placeholders)."""
        inside = (starts >= 0) & (starts + n <= len(ids))
        keys = ngram_keys(ids, n)
        if len(keys) == 0:
            return np.zeros(len(starts), np.int64), inside
        return keys[np.clip(starts, 0, len(keys) - 1)], inside

    def count(self, ids: np.ndarray) -> float:
        """Corpus count of a 1- or 2-gram; 0 for longer ones (not counted) and pruned bigrams."""
        if len(ids) == 1:
            return float(self.unigrams[min(int(ids[0]), len(self.unigrams) - 1)])
        if len(ids) == 2:
            return float(_lookup(self.arrays["bigram_keys"], self.arrays["bigram_counts"], ngram_keys(ids, 2), 0)[0][0])
        return 0.0

    def entropy(self, ids: np.ndarray, side: str) -> float:
        """Branching entropy to the `side` ("right" or "left") of a 1- to 3-gram; the corpus mean if rare."""
        n = len(ids)
        mean = float(self.arrays[f"{side}_mean_{n}"])
        return float(_lookup(self.arrays[f"{side}_keys_{n}"], self.arrays[f"{side}_entropy_{n}"],
                             ngram_keys(ids, n), mean)[0][0])

    def features(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids) - 1, len(FEATURES)) for each gap between neighbours i, i+1 of one clause. An n-gram that
        runs past the clause or was too rare in the corpus reads as the corpus mean, with known = 0."""
        ids = np.asarray(ids, dtype=np.int64)
        gaps = np.arange(len(ids) - 1)
        pair, _ = self._windows(ids, gaps, 2)
        count, _ = _lookup(self.arrays["bigram_keys"], self.arrays["bigram_counts"], pair, 0)
        unigram = self.unigrams[np.minimum(ids, len(self.unigrams) - 1)] + 1
        out = [np.log((count + 0.5) * self.total / (unigram[:-1] * unigram[1:]))]
        for n in range(1, MAX_N + 1):
            for side, starts in (("right", gaps - n + 1), ("left", gaps + 1)):  # the n-gram ending at i / from i+1
                keys, inside = self._windows(ids, starts, n)
                table = {name: self.arrays[f"{side}_{name}_{n}"] for name in ("keys", "entropy", "mean")}
                mean = float(table["mean"])
                entropy, known = _lookup(table["keys"], table["entropy"], keys, mean)
                known &= inside
                out += [np.where(known, entropy, mean), known.astype(np.float64)]
        return np.stack(out, axis=1)
