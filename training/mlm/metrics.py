"""Scoring /segment and /parse against gold data: span P/R/F1, UAS, chain baselines, the fitting split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


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


def uas(gold: list[list[int]], predicted: list[list[int]]) -> float:
    right = sum(int(g == p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
    return right / max(sum(len(g) for g in gold), 1)


def chain_heads(n: int, direction: str) -> list[int]:
    """Baselines: "right" = every word headed by the next (last is root), "left" = by the previous."""
    if direction == "right":
        return [i + 2 for i in range(n - 1)] + [0]
    return [0] + [i for i in range(1, n)]


def fitting_half(text: str) -> bool:
    """Whether a sentence may be among those the arc rule was fitted on (md5 of its text is even)."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 2 == 0
