"""Span decoding, compound objects and the F1 computation on hand-made cases."""

import numpy as np

from app.tasks.extract.decode import Span, Thresholds, build_triples, find_spans
from app.tasks.extract.schema import Schema
from training.extract.evaluate import keys, prf

SCHEMA = Schema.from_records([
    {"predicate": "作者", "subject_type": "图书作品", "object_type": {"@value": "人物"}},
    {"predicate": "饰演", "subject_type": "娱乐人物", "object_type": {"@value": "人物", "inWork": "影视作品"}},
])


def test_find_spans_pairs_each_start_with_the_nearest_end():
    start = np.array([0.9, 0, 0, 0.8, 0, 0])
    end = np.array([0, 0.7, 0, 0, 0, 0.9])
    spans = find_spans(start, end, 0.5, 0.5)
    assert [(s.start, s.end) for s in spans] == [(0, 1), (3, 5)]
    assert abs(spans[0].score - 0.9 * 0.7) < 1e-6


def test_compound_object_slots_join_their_value():
    text = "张智尧在楚留香新传里饰演楚留香"
    labels = {label: i for i, label in enumerate(SCHEMA.labels)}
    probs = np.zeros((len(text), len(SCHEMA.labels), 2))
    value, work = labels[("饰演", "@value")], labels[("饰演", "inWork")]
    probs[12, value, 0] = probs[14, value, 1] = 0.9  # 楚留香
    probs[4, work, 0] = probs[8, work, 1] = 0.8  # 楚留香新传
    (triple,) = build_triples(text, Span(0, 2, 0.95), probs, SCHEMA, Thresholds())
    assert triple["subject"] == "张智尧" and triple["predicate"] == "饰演"
    assert triple["object"] == {"@value": "楚留香", "inWork": "楚留香新传"}
    assert triple["object_type"] == {"@value": "人物", "inWork": "影视作品"}
    assert triple["subject_span"] == [0, 3] and triple["object_span"] == [12, 15]
    assert text[slice(*triple["object_span"])] == "楚留香"


def test_prf_counts_exact_triples_only():
    gold = [keys([("a", "作者", {"@value": "b"})]), keys([("c", "饰演", {"@value": "d", "inWork": "e"})])]
    perfect = prf(gold, gold)
    assert perfect == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # second sentence: right value, missing slot -> wrong; plus one spurious triple in the first
    predicted = [keys([("a", "作者", {"@value": "b"}), ("a", "作者", {"@value": "x"})]),
                 keys([("c", "饰演", {"@value": "d"})])]
    scores = prf(predicted, gold)
    assert scores["precision"] == round(1 / 3, 4) and scores["recall"] == 0.5
    assert scores["f1"] == round(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), 4)
    assert prf([set()], [set()])["f1"] == 0.0
