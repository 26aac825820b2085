"""Choose what Perturbed Masking reads (layer, segmentation threshold, arc orientation) with PyTorch,
every layer at once, on data that is not the reported test set: UD GSDSimp dev for segmentation
(PKU gold stays unseen), and the first half of UD dev sentences for parsing."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from tqdm import tqdm

from app.tasks.mlm import dependency_scores
from app.tasks.perturbed import adjacent_pairs, all_pairs, impact_matrix, impacts, masked_rows, word_matrix
from app.tasks.segmentation import SCALES, clauses, join_scores, scaled, score_segmentation, words_from_scores
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


def tune_segmentation(model, vocab: CharVocab, sentences: list[list[str]], clause_length: int = 64) -> dict:
    """Best (layer, scale, threshold) by F1 over the given gold segmentations."""
    texts = ["".join(words) for words in sentences]
    layers = model.config.num_hidden_layers + 1
    scores: list[list[list[np.ndarray]]] = [[] for _ in range(layers)]  # layer -> sentence -> run scores
    runs_of = []
    for text in tqdm(texts, desc="probe segmentation", unit="sent"):
        ids, runs = vocab.encode(text), clauses(text, clause_length)
        runs_of.append(runs)
        per_run = [layer_impacts(model, vocab, ids[s:e], adjacent_pairs(e - s)) for s, e in runs]
        for layer in range(layers):
            scores[layer].append([join_scores(m[layer]) for m in per_run])
    table = []
    for layer, scale in itertools.product(range(1, layers), SCALES):
        per_text = [scaled(s, scale) for s in scores[layer]]
        values = np.concatenate([s for sent in per_text for s in sent if len(s)])
        for threshold in np.quantile(values, np.linspace(0.05, 0.95, 37)):
            predicted = [words_from_scores(t, r, s, threshold) for t, r, s in zip(texts, runs_of, per_text,
                                                                                  strict=True)]
            f1 = score_segmentation(sentences, predicted)["f1"]
            table.append({"layer": layer, "scale": scale, "threshold": float(threshold), "f1": f1})
    best = max(table, key=lambda r: r["f1"])
    log.info("segmentation: best %s", best)
    return {"best": best, "table": table}


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
            for orientation in orientations:
                table.setdefault((layer, orientation), []).append(eisner(*dependency_scores(words, orientation)))
    gold = [s.heads for s in sentences]
    rows = [{"layer": k[0], "orientation": k[1], "uas": uas(gold, v)} for k, v in table.items()]
    best = max(rows, key=lambda r: r["uas"])
    log.info("parsing: best %s", best)
    return {"best": best, "table": rows}
