"""Choose what Perturbed Masking reads (layer, segmentation rule, arc orientation) with PyTorch,
every layer at once, on data that is not the reported test set: UD GSDSimp dev for segmentation
(PKU gold stays unseen), and the md5 half of UD dev sentences that `fitting_half` names for parsing."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from tqdm import tqdm

from app.tasks.mlm.ngrams import NgramStats
from app.tasks.mlm.parse import (
    ARC_FEATURES,
    IMPACTS,
    ROOT_FEATURES,
    ROOT_RULES,
    WORD_STATS,
    WordTagger,
    arc_features,
    arc_log_probs,
    decode,
    dependency_scores,
    word_spans,
    word_vectors,
)
from app.tasks.mlm.perturbed import adjacent_pairs, all_pairs, impact_matrix, impacts, masked_rows, word_matrix
from app.tasks.mlm.segment import FEATURES, clauses, feature_names, gap_features, words_from_scores
from app.tasks.mlm.trees import eisner
from app.text import CharVocab
from training.common.logistic import fit_logistic, fit_softmax
from training.mlm.metrics import chain_heads, fitting_half, score_segmentation, uas

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


@torch.no_grad()
def plain_hidden(model, vocab: CharVocab, text: str, layer: int) -> np.ndarray:
    """(n, H) hidden states at `layer` of the unmasked sentence, as the exported encoder gives them."""
    row = np.concatenate([[vocab.cls_id], vocab.encode(text), [vocab.sep_id]]).astype(np.int64)
    return model.bert(torch.from_numpy(row)[None], output_hidden_states=True).hidden_states[layer][0, 1:-1].numpy()


def fit_tagger(model, vocab: CharVocab, sentences, layer: int, l2: float = 10.0) -> tuple[WordTagger | None, dict]:
    """A WordTagger fitted on the gold universal POS of the `fitting_half` sentences (every length the encoder
    takes), and its word accuracy on the others next to the most frequent tag's; None without both halves."""
    limit = model.config.max_position_embeddings - 2
    usable = [s for s in sentences if len(s.text) <= limit]
    tags = sorted({t for s in usable for t in s.tags})
    x = {True: [], False: []}
    y = {True: [], False: []}
    for s in tqdm(usable, desc="probe tagger", unit="sent"):
        half = fitting_half(s.text)
        x[half].append(word_vectors(plain_hidden(model, vocab, s.text, layer), word_spans(s.words)))
        y[half] += [tags.index(t) for t in s.tags]
    if not x[True] or not x[False]:
        return None, {}
    tagger = WordTagger(tags, *fit_softmax(np.concatenate(x[True]), np.array(y[True]), len(tags), l2))
    held_x, held_y = np.concatenate(x[False]), np.array(y[False])
    logits = held_x @ tagger.weights + tagger.bias
    majority = np.bincount(y[True], minlength=len(tags)).argmax()
    return tagger, {"fitted_on_words": len(y[True]), "held_out_words": len(held_y),
                    "held_out_accuracy": round(float((logits.argmax(axis=1) == held_y).mean()), 4),
                    "most_frequent_tag_accuracy": round(float((held_y == majority).mean()), 4)}


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


def fit_arc_rule(examples: list[tuple[np.ndarray, np.ndarray, list[int]]], keep: np.ndarray,
                 l2: float = 1e-2) -> np.ndarray:
    """Weights (arc features, then root features) maximising the gold heads' likelihood under a softmax per
    dependent over its candidate heads and the root; examples are (arcs, roots, gold heads). Features where
    `keep` is False are left out (weight 0), for ablations."""
    from scipy.optimize import minimize

    n_arc = examples[0][0].shape[-1]

    def loss(w):
        w = w * keep
        value, grad = l2 * w @ w, 2 * l2 * w
        for arcs, roots, heads in examples:
            m = len(roots)
            p = np.exp(arc_log_probs(arcs, roots, w))
            gold = np.array([h - 1 if h else m for h in heads])
            value -= np.log(p[gold, np.arange(m)] + 1e-12).sum()
            p[gold, np.arange(m)] -= 1  # d loss / d score
            grad[:n_arc] += np.einsum("hd,hdf->f", p[:m], arcs)
            grad[n_arc:] += p[m] @ roots
        return value, grad * keep

    return minimize(loss, np.zeros(len(keep)), jac=True, method="L-BFGS-B", options={"maxiter": 2000}).x * keep


def arc_rule_subsets(with_stats: bool) -> dict[str, np.ndarray]:
    """Which features each ablated rule reads: structure (distance, punctuation, one-character words, root
    position), + corpus statistics, + Perturbed Masking impacts (the shipped rule)."""
    names = np.array([*ARC_FEATURES, *ROOT_FEATURES])
    impact = np.array([any(name.startswith(i) for i in IMPACTS) for name in names])
    stats = np.array([any(s in name for s in WORD_STATS) for name in names])
    subsets = {"structure": ~impact & ~stats, "structure+impacts": ~stats}
    if with_stats:
        subsets |= {"structure+statistics": ~impact, "all": np.ones(len(names), bool)}
    return subsets


def tune_parsing(model, vocab: CharVocab, sentences, layer: int, stats: NgramStats | None = None,
                 max_chars: int = 40) -> dict:
    """Fit the arc rule at `layer` on the sentences of `fitting_half` (of at most `max_chars` characters) and
    measure UAS (gold words) on the others: the rule and its ablations, the paper's rule in the orientation /
    root settings best on the fitting half, and the chain baselines. Sentences have .words and .heads, and when
    they have .tags (universal POS) a WordTagger is fitted too and the rule also reads its guesses."""
    tagger, tagging = fit_tagger(model, vocab, sentences, layer) if all(s.tags for s in sentences) else (None, None)
    sentences = [s for s in sentences if len(s.text) <= max_chars]
    ids = [vocab.encode(s.text) for s in sentences]
    matrices, tag_probs = [], []
    for sent, sent_ids in tqdm(list(zip(sentences, ids, strict=True)), desc="probe parsing", unit="sent"):
        chars = layer_impacts(model, vocab, sent_ids, all_pairs(len(sent_ids)))[layer]
        matrices.append(word_matrix(chars, word_spans(sent.words)))
        if tagger is not None:
            tag_probs.append(tagger.probs(plain_hidden(model, vocab, sent.text, layer), word_spans(sent.words)))
    fit = [fitting_half(s.text) for s in sentences]
    held = [s for s, f in zip(sentences, fit, strict=True) if not f]
    gold = [s.heads for s in held]
    rows = {"right_chain": uas(gold, [chain_heads(len(s.words), "right") for s in held]),
            "left_chain": uas(gold, [chain_heads(len(s.words), "left") for s in held])}

    def paper(settings, on_fitting_half: bool) -> float:
        chosen = [(s, m) for s, m, f in zip(sentences, matrices, fit, strict=True) if f == on_fitting_half]
        return uas([s.heads for s, _ in chosen], [eisner(*dependency_scores(m, *settings)) for _, m in chosen])

    settings = max(itertools.product(("head_moves_dependent", "dependent_moves_head"), ROOT_RULES, (False, True)),
                   key=lambda k: paper(k, True))
    rows[f"paper ({', '.join(map(str, settings))})"] = paper(settings, False)

    def fit_and_measure(rule: str, features: list, keep: np.ndarray) -> np.ndarray:
        train = [(*x, s.heads) for x, s, f in zip(features, sentences, fit, strict=True) if f]
        weights = fit_arc_rule(train, keep)
        rows[rule] = uas(gold, [decode(*x, weights) for x, f in zip(features, fit, strict=True) if not f])
        return weights

    features = [arc_features(m, s.words, i, stats) for s, i, m in zip(sentences, ids, matrices, strict=True)]
    subsets = arc_rule_subsets(stats is not None)
    weights = {rule: fit_and_measure(rule, features, keep) for rule, keep in subsets.items()}
    if tagger is not None:
        tagged = [arc_features(m, s.words, i, stats, t)
                  for s, i, m, t in zip(sentences, ids, matrices, tag_probs, strict=True)]
        n_tag = tagged[0][0].shape[-1] - len(ARC_FEATURES)

        def with_tags(rule: str) -> np.ndarray:  # the ablation's mask, every tag feature kept
            keep = subsets[rule]
            return np.r_[keep[:len(ARC_FEATURES)], np.ones(n_tag, bool), keep[len(ARC_FEATURES):]]

        weights["all+tags"] = fit_and_measure("all+tags", tagged, with_tags("all" if stats is not None
                                                                            else "structure+impacts"))
        if stats is not None:  # what the impacts still add once the rule knows word classes
            fit_and_measure("structure+statistics+tags", tagged, with_tags("structure+statistics"))
    log.info("parsing, UAS on the held-out half: %s", rows)
    best = "all+tags" if tagger is not None else "all" if stats is not None else "structure+impacts"
    return {"weights": [round(float(w), 6) for w in weights[best]], "rule": best, "tagger": tagger,
            "tagging": tagging, "paper": dict(zip(("orientation", "root", "center"), settings, strict=True)),
            "fitted_on": sum(fit), "held_out": len(held), "uas_held_out": rows}


def mutual_only(ngrams: bool) -> np.ndarray:
    """The plain rule of the paper: join when the mutual impact is high."""
    return np.array([name == "mutual" for name in feature_names(ngrams)], dtype=np.float64)
