"""Count the pretraining stream's n-grams into the boundary statistics /segment reads (app/tasks/mlm/ngrams.py).

Input: the uint16 id stream `zhserve train mlm` writes (runs/mlm/train.npy: corpus + task training
texts, never evaluation gold) and its vocabulary. Contexts seen fewer than `min_count` times are left
out: their entropy is noise, and the file stays small enough to ship.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from app.tasks.mlm.ngrams import MAX_N, ngram_keys, vocab_digest
from app.text import CharVocab

log = logging.getLogger(__name__)


def _entropy_by_group(groups: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique group keys, the entropy of each group's count distribution, and each group's total."""
    order = np.argsort(groups, kind="stable")
    groups, counts = groups[order], counts[order].astype(np.float64)
    keys, start = np.unique(groups, return_index=True)
    total = np.add.reduceat(counts, start)
    p = counts / np.repeat(total, np.diff(np.append(start, len(groups))))
    return keys, -np.add.reduceat(p * np.log(p), start), total


def build(stream: np.ndarray, vocab: CharVocab, min_count: int = 5) -> dict[str, np.ndarray]:
    ids = np.asarray(stream, dtype=np.int64)
    arrays = {"total": np.int64(len(ids)), "unigram_counts": np.bincount(ids).astype(np.int64),
              "vocab_digest": np.str_(vocab_digest(vocab.tokens))}
    contexts = ngram_keys(ids, 1)
    for n in range(1, MAX_N + 1):
        # every distinct (n+1)-gram once, with its count: its first n ids are a context followed by one
        # character (right entropy), its last n a context preceded by one (left entropy)
        windows = ngram_keys(ids, n + 1)
        grams, first, counts = np.unique(windows, return_index=True, return_counts=True)
        if n == 1:  # the bigrams themselves, for PMI
            keep = counts >= min_count
            arrays |= {"bigram_keys": grams[keep], "bigram_counts": counts[keep].astype(np.int32)}
        for side, context in (("right", contexts[first]), ("left", contexts[first + 1])):
            keys, entropy, total = _entropy_by_group(context, counts)
            keep = total >= min_count
            arrays[f"{side}_keys_{n}"] = keys[keep]
            arrays[f"{side}_entropy_{n}"] = entropy[keep].astype(np.float32)
            arrays[f"{side}_mean_{n}"] = np.float32(entropy[keep].mean() if keep.any() else 0.0)
        log.info("n=%d: %d contexts kept of %d", n, len(arrays[f"right_keys_{n}"]), len(grams))
        contexts = windows
    return arrays


def main(stream_file: Path, vocab_file: Path, out: Path, min_count: int = 5) -> Path:
    arrays = build(np.load(stream_file), CharVocab.load(vocab_file), min_count)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
