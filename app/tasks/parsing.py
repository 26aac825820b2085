"""Dependency heads from Perturbed Masking impacts read by a learned arc rule. numpy only.

Wu et al. (2020) decode Eisner trees straight from the word impact matrix; with the project's small
BERT that scores below the right-branching chain on UD dev. As for /segment, the impacts are read
next to structure and corpus statistics: every candidate arc h -> d gets features (signed distance,
both impacts raw and softmax-normalised over candidate heads, frequency and branching entropy of
both words, punctuation, one-character words), a softmax per dependent over its candidate heads and
the root turns weights . features into log-probabilities, and Eisner decodes the best projective
tree. `zhserve export mlm` fits the weights on one half of UD dev, chosen by `fitting_half`, and
reports on the other (training/mlm/probe.py); `zhserve eval parse` reports that half apart too.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np

from app.tasks.ngrams import NgramStats
from app.tasks.trees import eisner

# h - d falls in: <= -6, -5..-3, -2, -1, 1, 2, 3..5, >= 6
DISTANCE_EDGES = (-5, -2, -1, 0, 2, 3, 6)
DISTANCE_NAMES = ("d<=-6", "d-5..-3", "d-2", "d-1", "d+1", "d+2", "d+3..5", "d>=6")
WORD_STATS = ("log_count", "right_entropy", "left_entropy")
IMPACTS = ("head_moves_dependent", "dependent_moves_head", "head_moves_dependent_softmax",
           "dependent_moves_head_softmax")
ARC_FEATURES = (*DISTANCE_NAMES, *IMPACTS, *(f"{name}*head_right" for name in IMPACTS),
                *(f"{who}_{name}{side}" for who in ("dependent", "head") for side in ("", "*head_right")
                  for name in (*WORD_STATS, "punct", "one_char")))
ROOT_FEATURES = ("bias", "last_word", "punct", "log_count", "position", "one_char")


def fitting_half(text: str) -> bool:
    """Whether a sentence may be among those the arc rule was fitted on (md5 of its text is even)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 2 == 0


def word_stats(ids: np.ndarray, spans: list[tuple[int, int]], stats: NgramStats | None) -> np.ndarray:
    """(words, 3): log corpus count (words of 1-2 characters; 0 when longer or rare), right branching entropy of
    the word's last <= 3 characters, left entropy of its first <= 3; zeros without statistics."""
    out = np.zeros((len(spans), len(WORD_STATS)))
    if stats is None:
        return out
    for k, (s, e) in enumerate(spans):
        word = np.asarray(ids[s:e], dtype=np.int64)
        out[k] = [np.log1p(stats.count(word)), stats.entropy(word[-3:], "right"), stats.entropy(word[:3], "left")]
    return out


def is_punct(word: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in word)


def log_softmax_over_heads(scores: np.ndarray) -> np.ndarray:
    """scores[h, d] -> log-probabilities over h for each column d (the diagonal excluded)."""
    m = len(scores)
    logits = np.where(np.eye(m, dtype=bool), -np.inf, scores)
    logits = logits - logits.max(axis=0, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))


def arc_features(matrix: np.ndarray, words: list[str], ids: np.ndarray,
                 stats: NgramStats | None) -> tuple[np.ndarray, np.ndarray]:
    """(arcs (m, m, len(ARC_FEATURES)) indexed [head, dependent], roots (m, len(ROOT_FEATURES))) for the word
    impact matrix `matrix` (matrix[i, j]: impact of word j on word i). The diagonal of `arcs` is unused."""
    m = len(words)
    starts = np.cumsum([0] + [len(w) for w in words])
    per_word = np.column_stack([word_stats(ids, list(zip(starts[:-1], starts[1:], strict=True)), stats),
                                [is_punct(w) for w in words], [len(w) == 1 for w in words]]).astype(np.float64)
    head, dependent = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    distance = np.eye(len(DISTANCE_NAMES))[np.digitize(head - dependent, DISTANCE_EDGES)]
    impacts = np.stack([matrix.T, matrix], axis=-1)  # [h, d]: impact of h on d, of d on h
    if m > 1:
        impacts = np.concatenate([impacts, np.stack([log_softmax_over_heads(v) for v in (matrix.T, matrix)], -1)], -1)
    else:
        impacts = np.zeros((1, 1, len(IMPACTS)))
    impacts = np.where(np.eye(m, dtype=bool)[..., None], 0.0, impacts)
    right = (head > dependent)[..., None].astype(np.float64)
    of_dependent, of_head = per_word[dependent], per_word[head]
    arcs = np.concatenate([distance, impacts, impacts * right, of_dependent, of_dependent * right,
                           of_head, of_head * right], axis=-1)
    roots = np.column_stack([np.ones(m), np.arange(m) == m - 1, per_word[:, 3], per_word[:, 0],
                             np.arange(m) / m, per_word[:, 4]])
    return arcs, roots


def arc_log_probs(arcs: np.ndarray, roots: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(m + 1, m) log-probabilities: row h < m of word h heading d, row m of d being the root."""
    m = len(roots)
    scores = arcs @ weights[: arcs.shape[-1]]
    scores[np.arange(m), np.arange(m)] = -np.inf
    scores = np.vstack([scores, roots @ weights[arcs.shape[-1]:]])
    scores = scores - scores.max(axis=0, keepdims=True)
    return scores - np.log(np.exp(scores).sum(axis=0, keepdims=True))


ROOT_RULES = ("most_affected", "best_head")


def dependency_scores(words: np.ndarray, orientation: str, root_rule: str = "most_affected", center: bool = False):
    """Word impacts F -> (arc scores [head, dependent], root scores), as in Wu et al.'s code:
    "head_moves_dependent": a head is the word whose masking most changes its dependent, so each
    dependent's candidate heads are scored by softmax over F[d, :]; the root is the word the others
    affect most (largest row sum of F), or ("best_head") the word with the best average arc as a head.
    center: subtract from F[:, j] its mean, i.e. what masking j does to every word alike."""
    m = len(words)
    off = ~np.eye(m, dtype=bool)
    if center and m > 1:
        words = np.where(off, words - words.sum(axis=0) / (m - 1), 0.0)
    impact = words.T if orientation == "head_moves_dependent" else words  # impact[h, d]
    logits = np.where(off, impact, -np.inf)
    logits = logits - logits.max(axis=0, keepdims=True)
    arcs = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)  # per dependent, over heads
    if root_rule == "most_affected":
        root = np.full(m, -1e9)
        root[int(words.sum(axis=1).argmax())] = 0.0
    else:
        root = arcs.sum(axis=1) / max(m - 1, 1)
    return arcs, root


def decode(arcs: np.ndarray, roots: np.ndarray, weights: np.ndarray) -> list[int]:
    """CoNLL-U heads (1-based, 0 = root) of the best projective tree under the arc rule."""
    if len(roots) == 1:
        return [0]
    log_probs = arc_log_probs(arcs, roots, weights)
    return eisner(log_probs[:-1], log_probs[-1])


def learned_heads(matrix: np.ndarray, words: list[str], ids: np.ndarray, stats: NgramStats | None,
                  weights: np.ndarray) -> list[int]:
    return decode(*arc_features(matrix, words, ids, stats), weights)
