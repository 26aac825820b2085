"""The learned arc rule of /parse (app/tasks/parsing.py) and its fitting (training/mlm/probe.py), on hand-made
impact matrices: the features line up with their names, and the fit learns what the gold trees follow."""

from __future__ import annotations

import numpy as np
import pytest

from app.tasks.parsing import ARC_FEATURES, ROOT_FEATURES, arc_features, decode, fitting_half
from app.tasks.trees import chain_heads, uas
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
