"""Dependency heads from Perturbed Masking impacts read by a learned arc rule. numpy only.

Wu et al. (2020) decode Eisner trees straight from the word impact matrix; with the project's small
BERT that scores below the right-branching chain on UD dev. As for /segment, the impacts are read
next to structure and corpus statistics: every candidate arc h -> d gets features (signed distance,
both impacts raw and softmax-normalised over candidate heads, frequency and branching entropy of
both words, punctuation, one-character words), a softmax per dependent over its candidate heads and
the root turns weights . features into log-probabilities, and Eisner decodes the best projective
tree. `zhserve export mlm` fits the weights on one half of UD dev, chosen by `fitting_half`, and
reports on the other (training/mlm/probe.py); `zhserve eval parse` reports that half apart too.

Which word heads which depends mostly on word classes, and the impacts carry little of that, so the
rule can also read a `WordTagger`: universal POS guesses from the encoder's hidden states of the
unmasked sentence (a softmax regression fitted on the same half of UD dev), entered as the head's and
the dependent's tag probabilities and their products, each also x "head to the right".
"""

from __future__ import annotations

import unicodedata

import numpy as np

from app.tasks.mlm.ngrams import NgramStats
from app.tasks.mlm.trees import eisner

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


class WordTagger:
    """Universal POS probabilities for words: a softmax regression over each word's mean and last-character
    hidden states (the encoder's output for the unmasked sentence). Stored as an .npz file."""

    def __init__(self, tags: list[str], weights: np.ndarray, bias: np.ndarray):
        self.tags, self.weights, self.bias = list(tags), np.asarray(weights), np.asarray(bias)
        if self.weights.shape[1] != len(self.tags) or self.bias.shape != (len(self.tags),):
            raise ValueError(f"tagger: weights {self.weights.shape} and bias {self.bias.shape} for {len(tags)} tags")

    @classmethod
    def load(cls, path) -> WordTagger:
        with np.load(path) as f:
            return cls([str(t) for t in f["tags"]], f["weights"], f["bias"])

    def save(self, path) -> None:
        np.savez(path, tags=np.array(self.tags), weights=self.weights.astype(np.float32),
                 bias=self.bias.astype(np.float32))

    def probs(self, hidden: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
        """(words, tags) probabilities from (characters, H) hidden states."""
        if self.weights.shape[0] != 2 * hidden.shape[1]:
            raise ValueError(f"tagger: reads {self.weights.shape[0] // 2}-wide hidden states, got {hidden.shape[1]}")
        logits = word_vectors(hidden, spans) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def word_spans(words: list[str]) -> list[tuple[int, int]]:
    """[start, end) character offsets of each word in "".join(words)."""
    starts = np.cumsum([0] + [len(w) for w in words]).tolist()
    return list(zip(starts[:-1], starts[1:], strict=True))


def word_vectors(hidden: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """(words, 2H): the mean of each word's character vectors, then its last character's (the head
    character of most Chinese words)."""
    return np.stack([np.concatenate([hidden[s:e].mean(axis=0), hidden[e - 1]]) for s, e in spans])


def tag_feature_names(tags: list[str]) -> list[str]:
    pairs = [f"head_{h}*dependent_{d}" for h in tags for d in tags]
    return [*(f"head_{t}" for t in tags), *(f"head_{t}*head_right" for t in tags),
            *(f"dependent_{t}*head_right" for t in tags), *(f"dependent_{t}*adjacent" for t in tags),
            *(f"dependent_{t}*adjacent*head_right" for t in tags), *pairs, *(f"{p}*head_right" for p in pairs)]


def tag_features(tags: np.ndarray) -> np.ndarray:
    """(m, m, len(tag_feature_names)) indexed [head, dependent] from (m, T) tag probabilities."""
    m, t = tags.shape
    head, dependent = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    right = (head > dependent)[..., None].astype(np.float64)
    adjacent = (np.abs(head - dependent) == 1)[..., None].astype(np.float64)
    of_head, of_dependent = tags[head], tags[dependent]
    pairs = (of_head[..., :, None] * of_dependent[..., None, :]).reshape(m, m, t * t)
    return np.concatenate([of_head, of_head * right, of_dependent * right, of_dependent * adjacent,
                           of_dependent * adjacent * right, pairs, pairs * right], axis=-1)


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


def arc_features(matrix: np.ndarray, words: list[str], ids: np.ndarray, stats: NgramStats | None,
                 tags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(arcs (m, m, len(ARC_FEATURES) [+ tag features]) indexed [head, dependent], roots (m, len(ROOT_FEATURES)))
    for the word impact matrix `matrix` (matrix[i, j]: impact of word j on word i) and, when given, the words'
    (m, T) tag probabilities. The diagonal of `arcs` is unused."""
    m = len(words)
    per_word = np.column_stack([word_stats(ids, word_spans(words), stats),
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
                           of_head, of_head * right, *([] if tags is None else [tag_features(tags)])], axis=-1)
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
                  weights: np.ndarray, tags: np.ndarray | None = None) -> list[int]:
    return decode(*arc_features(matrix, words, ids, stats, tags), weights)
