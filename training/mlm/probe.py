"""Choose what Perturbed Masking reads (layer, segmentation rule, arc orientation) with PyTorch,
every layer at once, on data that is not the reported test set: UD GSDSimp dev for segmentation
(PKU gold stays unseen), and the first half of UD dev sentences for parsing."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from tqdm import tqdm

from app.tasks.mlm import ROOT_RULES, dependency_scores
from app.tasks.ngrams import NgramStats
from app.tasks.perturbed import adjacent_pairs, all_pairs, impact_matrix, impacts, masked_rows, word_matrix
from app.tasks.segmentation import (
    FEATURES,
    clauses,
    feature_names,
    gap_features,
    mutual_only,
    score_segmentation,
    words_from_scores,
)
from app.tasks.trees import eisner, uas
from app.text import CharVocab

log = logging.getLogger(__name__)


@torch.no_grad()
def layer_impacts(model, vocab: CharVocab, ids: np.ndarray, pairs, batch: int = 256) -> list[np.ndarray]:
    """The (n, n) impact matrix at every layer (index 0: embeddings) for one sentence."""
    if not pairs:
        return [np.zeros((len(ids), len(ids)))] * (model.config.num_hidden_layers + 1)
    rows, keys = masked_rows(ids, vocab, pairs)
    per_layer: list[list[np.ndarray]] = [[] for _ in range(model.config.num_hidden_layers + 1)]
    for b in range(0, len(rows), batch):
        out = model.bert(torch.from_numpy(np.stack(rows[b:b + batch])), output_hidden_states=True)
        for layer, hidden in enumerate(out.hidden_states):
            per_layer[layer] += list(hidden.numpy())
    return [impact_matrix(len(ids), impacts(keys, hidden)) for hidden in per_layer]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """Weights of a logistic regression (column 0 the bias) by L-BFGS on the mean log-loss. The features are
    standardised while fitting, so one penalty suits them all; the weights returned apply to raw features."""
    from scipy.optimize import minimize

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    mean[0], scale[0] = 0.0, 1.0
    z = (x - mean) / scale
    penalised = np.r_[0.0, np.ones(x.shape[1] - 1)]

    def loss(w):
        logits = z @ w
        p = 1 / (1 + np.exp(-np.clip(logits, -30, 30)))
        value = np.mean(np.logaddexp(0, logits) - y * logits) + l2 * (penalised * w) @ w
        return value, z.T @ (p - y) / len(y) + 2 * l2 * penalised * w

    v = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 3000}).x
    weights = v / scale
    weights[0] = v[0] - (v[1:] * mean[1:] / scale[1:]).sum()
    return weights


def gold_joins(words: list[str], start: int, end: int) -> np.ndarray:
    """1 where characters k and k+1 of text[start:end] are in the same gold word."""
    same = np.zeros(sum(map(len, words)), bool)  # same[k]: k and k+1 share a word
    pos = 0
    for w in words:
        same[pos:pos + len(w) - 1] = True
        pos += len(w)
    return same[start:end - 1].astype(np.float64)


def tune_segmentation(model, vocab: CharVocab, sentences: list[list[str]], ngrams: NgramStats | None = None,
                      clause_length: int = 64) -> dict:
    """Per layer, rules over gap_features, each with the threshold of best F1: the paper's mutual impact,
    and logistic rules fitted to the gold joins on the impact features alone, on the n-gram features alone
    (when given), and on both. Returns the best (layer, weights, threshold) of the rules that read impacts."""
    texts = ["".join(words) for words in sentences]
    layers = model.config.num_hidden_layers + 1
    names = feature_names(ngrams is not None)
    features: list[list[list[np.ndarray]]] = [[] for _ in range(layers)]  # layer -> sentence -> run features
    runs_of, labels = [], []
    for words, text in tqdm(list(zip(sentences, texts, strict=True)), desc="probe segmentation", unit="sent"):
        ids, runs = vocab.encode(text), clauses(text, clause_length)
        runs_of.append(runs)
        labels += [gold_joins(words, s, e) for s, e in runs]
        per_run = [(layer_impacts(model, vocab, ids[s:e], adjacent_pairs(e - s)),
                    None if ngrams is None else ngrams.features(ids[s:e])) for s, e in runs]
        for layer in range(layers):
            features[layer].append([gap_features(m[layer], extra) for m, extra in per_run])
    y = np.concatenate(labels)
    impact_columns = np.array([name.split("@")[0] in FEATURES for name in names])
    subsets = {"logistic": np.ones(len(names), bool), "impacts_only": impact_columns}
    if ngrams is not None:
        subsets["ngrams_only"] = ~impact_columns
        subsets["ngrams_only"][0] = True  # the bias
    table = []
    for layer in range(1, layers):
        x = np.concatenate([f for sent in features[layer] for f in sent])
        rules = {"mutual": mutual_only(ngrams is not None)}
        rules |= {rule: np.where(keep, fit_logistic(np.where(keep, x, 0.0), y), 0.0) for rule, keep in subsets.items()
                  if rule != "ngrams_only" or layer == 1}  # the n-gram rule is the same at every layer
        for rule, weights in rules.items():
            scores = [[f @ weights for f in sent] for sent in features[layer]]
            for threshold in np.quantile(x @ weights, np.linspace(0.05, 0.95, 37)):
                predicted = [words_from_scores(t, r, s, threshold)
                             for t, r, s in zip(texts, runs_of, scores, strict=True)]
                f1 = score_segmentation(sentences, predicted)["f1"]
                table.append({"layer": layer, "rule": rule, "weights": [round(float(w), 5) for w in weights],
                              "threshold": float(threshold), "f1": f1})
    best = max((r for r in table if r["rule"] != "ngrams_only"), key=lambda r: r["f1"])
    log.info("segmentation: best %s", best)
    by_rule = {}
    for r in table:
        if r["f1"] > by_rule.get((r["layer"], r["rule"]), {"f1": -1})["f1"]:
            by_rule[r["layer"], r["rule"]] = {k: v for k, v in r.items() if k != "weights"}
    return {"best": best, "features": names, "table": list(by_rule.values())}


def tune_parsing(model, vocab: CharVocab, sentences, orientations=("head_moves_dependent", "dependent_moves_head")):
    """Best (layer, orientation) by UAS with gold words; sentences have .words and .heads."""
    layers = model.config.num_hidden_layers + 1
    table: dict[tuple[int, str], list[list[int]]] = {}
    for sent in tqdm(sentences, desc="probe parsing", unit="sent"):
        text = "".join(sent.words)
        chars = layer_impacts(model, vocab, vocab.encode(text), all_pairs(len(text)))
        starts = np.cumsum([0] + [len(w) for w in sent.words])
        spans = list(zip(starts[:-1], starts[1:], strict=True))
        for layer in range(1, layers):
            words = word_matrix(chars[layer], spans)
            for orientation, root, center in itertools.product(orientations, ROOT_RULES, (False, True)):
                heads = eisner(*dependency_scores(words, orientation, root, center))
                table.setdefault((layer, orientation, root, center), []).append(heads)
    gold = [s.heads for s in sentences]
    rows = [{"layer": k[0], "orientation": k[1], "root": k[2], "center": k[3], "uas": uas(gold, v)}
            for k, v in table.items()]
    best = max(rows, key=lambda r: r["uas"])
    log.info("parsing: best %s", best)
    return {"best": best, "table": rows}
