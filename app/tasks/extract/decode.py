"""Pointer probabilities -> spans -> triples with compound objects (numpy only).

Shared by serving and by evaluation during training, so both decode identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.tasks.extract.schema import VALUE, Schema

MAX_SUBJECTS = 32  # per text: bounds the object-stage work one sentence can cause


@dataclass(frozen=True)
class Thresholds:
    subject_start: float = 0.5
    subject_end: float = 0.5
    object_start: float = 0.5
    object_end: float = 0.5


@dataclass(frozen=True)
class Span:
    start: int
    end: int  # inclusive
    score: float


def find_spans(start: np.ndarray, end: np.ndarray, t_start: float, t_end: float, max_width: int = 64) -> list[Span]:
    """Each start above its threshold pairs with the nearest end at or after it, as in the 2019 entry."""
    ends = np.flatnonzero(end > t_end)
    spans = []
    for i in np.flatnonzero(start > t_start):
        k = np.searchsorted(ends, i)
        if k < len(ends) and ends[k] - i < max_width:
            j = int(ends[k])
            spans.append(Span(int(i), j, float(start[i] * end[j])))
    return spans


def find_subjects(subject_probs: np.ndarray, th: Thresholds) -> list[Span]:
    """subject_probs (T, 2) -> at most MAX_SUBJECTS subject spans, best first."""
    spans = find_spans(subject_probs[:, 0], subject_probs[:, 1], th.subject_start, th.subject_end)
    return sorted(spans, key=lambda s: -s.score)[:MAX_SUBJECTS]


def build_triples(text: str, subject: Span, object_probs: np.ndarray, schema: Schema, th: Thresholds) -> list[dict]:
    """object_probs (T, C, 2) for one subject -> triples; extra slots join their @value objects."""
    found: dict[int, list[Span]] = {}
    for label in np.flatnonzero((object_probs[:, :, 0] > th.object_start).any(axis=0)):
        spans = find_spans(object_probs[:, label, 0], object_probs[:, label, 1], th.object_start, th.object_end)
        if spans:
            found[int(label)] = spans
    slots: dict[str, dict[str, Span]] = {}
    for label, spans in found.items():
        predicate, slot = schema.labels[label]
        if slot != VALUE:
            slots.setdefault(predicate, {})[slot] = max(spans, key=lambda s: s.score)
    triples = []
    for label, spans in found.items():
        predicate, slot = schema.labels[label]
        if slot != VALUE:
            continue
        spec = schema.predicates[predicate]
        for o in spans:
            obj = {VALUE: text[o.start : o.end + 1]}
            obj_types = {VALUE: spec.object_types[VALUE]}
            for name, s in slots.get(predicate, {}).items():
                obj[name] = text[s.start : s.end + 1]
                obj_types[name] = spec.object_types[name]
            triples.append({
                "subject": text[subject.start : subject.end + 1],
                "predicate": predicate,
                "object": obj,
                "subject_type": spec.subject_type,
                "object_type": obj_types,
                "score": round(subject.score * o.score, 6),
                "subject_span": [subject.start, subject.end + 1],
                "object_span": [o.start, o.end + 1],
            })
    return triples
