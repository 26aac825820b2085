"""Pointer probabilities -> spans -> triples with compound objects (numpy only).

Shared by serving and by evaluation during training, so both decode identically. Pointers are over tokens:
characters for the project's DGCNN, word pieces for a pretrained encoder; `offsets` (an Encoding's, (T, 2)
[start, end) into the text) map token spans to the characters they came from, and tokens that stand for no
text ([CLS], [SEP]) never start or end a span. Without offsets, token i is character i.
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


def text_only(probs: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Pointer probabilities with the rows of tokens that stand for no text set to 0."""
    if offsets is None:
        return probs
    is_text = (offsets[:, 1] > offsets[:, 0]).reshape(-1, *([1] * (probs.ndim - 1)))
    return probs * is_text


def char_span(span: Span, offsets: np.ndarray | None) -> tuple[int, int]:
    """A token span (inclusive) -> [start, end) into the text."""
    if offsets is None:
        return span.start, span.end + 1
    return int(offsets[span.start, 0]), int(offsets[span.end, 1])


def find_subjects(subject_probs: np.ndarray, th: Thresholds, offsets: np.ndarray | None = None) -> list[Span]:
    """subject_probs (T, 2) -> at most MAX_SUBJECTS subject token spans, best first."""
    subject_probs = text_only(subject_probs, offsets)
    spans = find_spans(subject_probs[:, 0], subject_probs[:, 1], th.subject_start, th.subject_end)
    return sorted(spans, key=lambda s: -s.score)[:MAX_SUBJECTS]


def build_triples(text: str, subject: Span, object_probs: np.ndarray, schema: Schema, th: Thresholds,
                  offsets: np.ndarray | None = None) -> list[dict]:
    """object_probs (T, C, 2) for one subject -> triples; extra slots join their @value objects."""
    object_probs = text_only(object_probs, offsets)
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
    s_start, s_end = char_span(subject, offsets)
    for label, spans in found.items():
        predicate, slot = schema.labels[label]
        if slot != VALUE:
            continue
        spec = schema.predicates[predicate]
        for o in spans:
            o_start, o_end = char_span(o, offsets)
            obj = {VALUE: text[o_start:o_end]}
            obj_types = {VALUE: spec.object_types[VALUE]}
            for name, s in slots.get(predicate, {}).items():
                obj[name] = text[slice(*char_span(s, offsets))]
                obj_types[name] = spec.object_types[name]
            triples.append({
                "subject": text[s_start:s_end],
                "predicate": predicate,
                "object": obj,
                "subject_type": spec.subject_type,
                "object_type": obj_types,
                "score": round(subject.score * o.score, 6),
                "subject_span": [s_start, s_end],
                "object_span": [o_start, o_end],
            })
    return triples
