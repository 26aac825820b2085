"""The learned arc rule of /parse (app/tasks/mlm/parse.py) and its fitting (training/mlm/probe.py), on hand-made
impact matrices and tags: the features line up with their names, the fit learns what the gold trees follow,
and the word tagger round-trips and learns separable classes."""

from __future__ import annotations

import numpy as np
import pytest

from app.tasks.mlm.parse import (
    ARC_FEATURES,
    ROOT_FEATURES,
    WordTagger,
    arc_features,
    decode,
    tag_feature_names,
    word_vectors,
)
from training.common.logistic import fit_softmax
from training.mlm.metrics import chain_heads, fitting_half, uas
from training.mlm.probe import arc_rule_subsets, fit_arc_rule


def column(name: str) -> int:
    return ARC_FEATURES.index(name)


def test_arc_features_line_up_with_their_names():
    words = ["我们", "爱", "。"]
    matrix = np.array([[0, 2.0, 0.5], [1.0, 0, 3.0], [0.1, 0.2, 0]])  # matrix[i, j]: impact of word j on word i
    arcs, roots = arc_features(matrix, words, np.arange(4), None)
    assert arcs.shape == (3, 3, len(ARC_FEATURES)) and roots.shape == (3, len(ROOT_FEATURES))
    assert arcs[1, 0, column("d+1")] == 1 and arcs[0, 2, column("d-2")] == 1  # [head, dependent]
    assert arcs[1, 0, column("head_moves_dependent")] == 2.0  # masking word 1 moves word 0 by 2
    assert arcs[1, 0, column("dependent_moves_head")] == 1.0
    assert arcs[1, 0, column("head_moves_dependent*head_right")] == 2.0
    assert arcs[0, 1, column("head_moves_dependent*head_right")] == 0  # head 0 is left of dependent 1
    softmax = np.exp(arcs[[1, 2], 0, column("head_moves_dependent_softmax")])
    assert softmax.sum() == pytest.approx(1.0) and softmax[0] > softmax[1]  # over the heads of dependent 0
    assert arcs[0, 2, column("dependent_punct")] == 1 and arcs[0, 1, column("dependent_one_char")] == 1
    assert arcs[2, 0, column("head_punct*head_right")] == 1
    assert not arcs[..., column("dependent_log_count")].any()  # no corpus statistics given
    assert list(roots[:, ROOT_FEATURES.index("last_word")]) == [0, 0, 1]


def random_projective_tree(rng, m: int) -> list[int]:
    heads = [0] * m

    def attach(s: int, t: int, head: int) -> None:  # words s..t-1 hang from `head` (1-based, 0 = root)
        if s < t:
            r = int(rng.integers(s, t))
            heads[r] = head
            attach(s, r, r + 1)
            attach(r + 1, t, r + 1)

    attach(0, m, 0)
    return heads


def sentences_with_trees(rng, count: int, follow_impacts: bool):
    """Random sentences; the gold tree is the right chain, or (follow_impacts) a random projective one whose arcs
    the impact matrix marks: masking a word's head moves the word most."""
    out = []
    for _ in range(count):
        m = int(rng.integers(3, 9))
        heads = random_projective_tree(rng, m) if follow_impacts else chain_heads(m, "right")
        matrix = rng.uniform(0, 1, (m, m))
        for d, h in enumerate(heads):
            if h and follow_impacts:
                matrix[d, h - 1] += 3.0
        np.fill_diagonal(matrix, 0)
        out.append((*arc_features(matrix, ["字"] * m, np.zeros(m, int), None), heads))
    return out


def test_the_fit_learns_what_the_gold_trees_follow():
    rng = np.random.default_rng(0)
    subsets = arc_rule_subsets(with_stats=False)
    train, test = sentences_with_trees(rng, 40, False), sentences_with_trees(rng, 20, False)
    weights = fit_arc_rule(train, subsets["structure"])
    assert uas([h for *_, h in test], [decode(a, r, weights) for a, r, _ in test]) == 1.0
    train, test = sentences_with_trees(rng, 40, True), sentences_with_trees(rng, 20, True)
    gold = [h for *_, h in test]
    structure = fit_arc_rule(train, subsets["structure"])
    with_impacts = fit_arc_rule(train, subsets["structure+impacts"])
    assert not with_impacts[~subsets["structure+impacts"]].any()  # left-out features keep weight 0
    assert uas(gold, [decode(a, r, with_impacts) for a, r, _ in test]) > 0.95
    assert uas(gold, [decode(a, r, structure) for a, r, _ in test]) < 0.7


def test_fitting_half_is_a_fixed_half_of_the_sentences():
    texts = [f"句子{i}" for i in range(400)]
    share = sum(map(fitting_half, texts)) / len(texts)
    assert 0.4 < share < 0.6 and [fitting_half(t) for t in texts] == [fitting_half(t) for t in texts]


def test_tag_features_line_up_with_their_names():
    tags = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # words 0..2 over the tags N, V
    matrix = np.ones((3, 3)) - np.eye(3)
    arcs, _ = arc_features(matrix, ["我", "爱", "你"], np.arange(3), None, tags)
    names = [*ARC_FEATURES, *tag_feature_names(["N", "V"])]
    assert arcs.shape == (3, 3, len(names))
    at = names.index
    assert arcs[1, 0, at("head_V")] == pytest.approx(0.8) and arcs[1, 0, at("head_V*head_right")] == pytest.approx(0.8)
    assert arcs[0, 1, at("head_N*head_right")] == 0  # head 0 is left of dependent 1
    assert arcs[1, 0, at("head_V*dependent_N")] == pytest.approx(0.8 * 0.9)
    assert arcs[1, 0, at("dependent_N*adjacent*head_right")] == pytest.approx(0.9)
    assert arcs[2, 0, at("dependent_N*adjacent")] == 0  # two words apart


def verb_noun_sentences(rng, count: int, tagged: bool):
    """The first word is a verb and the root, later verbs hang from it, every noun from the nearest verb on its
    left; the tags say which word is a verb, the impacts are noise."""
    out = []
    for _ in range(count):
        m = int(rng.integers(4, 10))
        verb = np.r_[True, rng.uniform(size=m - 1) < 0.35]
        heads = [0] + [1 if verb[k] else int(np.flatnonzero(verb[:k])[-1]) + 1 for k in range(1, m)]
        matrix = rng.uniform(0, 1, (m, m))
        np.fill_diagonal(matrix, 0)
        tags = np.eye(2)[verb.astype(int)] if tagged else None
        out.append((*arc_features(matrix, ["字"] * m, np.zeros(m, int), None, tags), heads))
    return out


def test_the_fit_reads_word_tags():
    scores = {}
    for tagged in (True, False):
        rng = np.random.default_rng(0)
        train, test = verb_noun_sentences(rng, 40, tagged), verb_noun_sentences(rng, 20, tagged)
        weights = fit_arc_rule(train, np.ones(train[0][0].shape[-1] + train[0][1].shape[-1], bool))
        scores[tagged] = uas([h for *_, h in test], [decode(a, r, weights) for a, r, _ in test])
    assert scores[True] > 0.85 and scores[False] < 0.75


def test_word_tagger_learns_classes_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 4))  # three classes of 4-wide character vectors
    classes = rng.integers(0, 3, 300)
    hidden = centres[classes] + rng.normal(0, 0.5, (300, 4))
    spans = [(k, k + 1) for k in range(300)]  # one-character words
    tagger = WordTagger(["A", "B", "C"], *fit_softmax(word_vectors(hidden, spans), classes, 3, l2=1.0))
    probs = tagger.probs(hidden, spans)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(axis=1), 1)
    assert (probs.argmax(axis=1) == classes).mean() > 0.95
    tagger.save(tmp_path / "tagger.npz")
    again = WordTagger.load(tmp_path / "tagger.npz")
    assert again.tags == ["A", "B", "C"] and np.allclose(again.probs(hidden, spans), probs, atol=1e-5)
    assert np.allclose(word_vectors(hidden, [(0, 2)]), np.r_[hidden[:2].mean(axis=0), hidden[1]])
    with pytest.raises(ValueError):
        tagger.probs(np.zeros((3, 5)), [(0, 3)])  # hidden states of another width
