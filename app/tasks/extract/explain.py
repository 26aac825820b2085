"""Integrated Gradients for the /extract model: which characters made it find this triple?

The explained score is the probabilistic graph's log-probability of the triple's pointers:
log P(subject start) + log P(subject end), plus, when the target names a predicate and an object,
log P(object start | subject, predicate) + log P(object end | subject, predicate) for the object's @value.

The gradient graph takes token embeddings: characters for the DGCNN, word pieces for a pretrained encoder.
A token's attribution is shared evenly by the characters it covers, so the per-character attributions still
sum to F(x) - F(x'); [CLS] and [SEP] keep their own embeddings in the baseline (they stand for no text, so
they carry no attribution), and whitespace, which no word piece covers, gets 0.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass

import numpy as np

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import Section, check_text
from app.tasks.explain import checked_steps, integrate, interpolate, quadrature
from app.tasks.extract.schema import VALUE, Schema
from app.text.subword import Encoding
from app.text.tokenization import Tokenization

BASELINES = ("zero", "pad", "mask")
SUBJECT_SCORE = "log P(subject start) + log P(subject end)"
TRIPLE_SCORE = SUBJECT_SCORE + " + log P(object start | subject, predicate) + log P(object end | subject, predicate)"


@dataclass(frozen=True)
class Target:
    subject: tuple[int, int]  # [start, end) into the text
    predicate: str | None = None
    object: tuple[int, int] | None = None
    label: int = 0

    def describe(self, text: str) -> dict:
        out = {"subject": text[slice(*self.subject)], "subject_span": list(self.subject)}
        if self.predicate is not None and self.object is not None:
            out |= {"predicate": self.predicate, "object": {VALUE: text[slice(*self.object)]},
                    "object_span": list(self.object)}
        return out | {"score_explained": TRIPLE_SCORE if self.predicate else SUBJECT_SCORE}

    def graph_inputs(self, encoding: Encoding) -> dict[str, np.ndarray]:
        """The gradient graph's inputs besides the embeddings: the spans as inclusive token indices."""
        subject = _tokens(encoding, self.subject, "subject")
        obj = _tokens(encoding, self.object, "object") if self.object else (0, 0)
        return {"mask": np.ones(len(encoding), np.float32),
                "subject": np.array(subject, np.int64), "object": np.array(obj, np.int64),
                "label": np.array(self.label, np.int64),
                "use_object": np.array(1.0 if self.object else 0.0, np.float32)}


def _tokens(encoding: Encoding, span: tuple[int, int], field: str) -> tuple[int, int]:
    tokens = encoding.token_span(*span)
    if tokens is None:
        raise InvalidInput(f"target.{field}_span: {list(span)} does not start and end on the boundaries of the "
                           "model's tokens")
    return tokens


def _kind(value: object) -> str:
    """A value's type for messages (never the value itself: it may be huge)."""
    return "null" if value is None else type(value).__name__


def _span(text: str, span: object, value: object, field: str) -> tuple[int, int]:
    """A [start, end) span from `span`, or found from the `value` string (its first occurrence)."""
    if value is not None and not isinstance(value, str):  # a list or dict would crash the comparisons below
        raise InvalidInput(f"target.{field}: expected a string, got {_kind(value)}")
    if span is not None:
        if (not isinstance(span, list | tuple) or len(span) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in span)):
            shown = reprlib.repr(span) if isinstance(span, list | tuple) else _kind(span)
            raise InvalidInput(f"target.{field}_span: expected [start, end] integers, got {shown}")
        start, end = span
        if not 0 <= start < end <= len(text):
            raise InvalidInput(f"target.{field}_span: {span} is not a non-empty span of the {len(text)}-character text")
        if value is not None and text[start:end] != value:
            raise InvalidInput(f"target.{field}: {reprlib.repr(value)} is not the text at {field}_span {span} "
                               f"({text[start:end]!r})")
        return start, end
    if value is None:
        raise InvalidInput(f"target.{field}_span: give the span (or the {field} string)")
    if not value:
        raise InvalidInput(f"target.{field}: expected a non-empty string")
    start = text.find(value)
    if start < 0:
        raise InvalidInput(f"target.{field}: {reprlib.repr(value)} does not occur in the text")
    return start, start + len(value)


def resolve_target(text: str, target: dict, schema: Schema) -> Target:
    """A target as /extract returned it (or just the fields that matter) -> spans and the object label.

    Every field is type-checked first: the target is free-form JSON, and a list or object where a string
    belongs must be a 422 naming the field, not a TypeError (unhashable) deep in the lookup."""
    if not isinstance(target, dict):
        raise InvalidInput(f"target: expected an object, got {_kind(target)}")
    subject = _span(text, target.get("subject_span"), target.get("subject"), "subject")
    predicate = target.get("predicate")
    if predicate is None:
        return Target(subject)
    if not isinstance(predicate, str):
        raise InvalidInput(f"target.predicate: expected a string, got {_kind(predicate)}")
    if predicate not in schema.predicates:
        raise InvalidInput(f"target.predicate: {reprlib.repr(predicate)} is not in the model's schema")
    value = target.get("object")
    if isinstance(value, dict):
        value = value.get(VALUE)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"target.object.{VALUE}: expected a string, got {_kind(value)}")
    elif value is not None and not isinstance(value, str):
        raise InvalidInput(f'target.object: expected a string or {{"{VALUE}": string}}, got {_kind(value)}')
    obj = _span(text, target.get("object_span"), value, "object")
    return Target(subject, predicate, obj, schema.label_index[(predicate, VALUE)])


class ExplainSection(Section):
    embeddings: str  # the character embedding table the gradient graph takes its inputs from
    steps: int  # default integration steps
    max_steps: int
    max_length: int = 256  # characters: an IG request is `steps` rows of the whole text


class ExtractExplainer:
    def __init__(self, model: ModelHandle, config: ExplainSection, tokens: Tokenization, schema: Schema):
        self.model, self.tokens, self.schema = model, tokens, schema
        self.table = np.load(model.directory / config.embeddings).astype(np.float32)
        self.default_steps, self.max_steps, self.max_length = config.steps, config.max_steps, config.max_length

    def baseline(self, name: str, length: int) -> np.ndarray:
        if name == "zero":
            return np.zeros((length, self.table.shape[1]), np.float32)
        if name in ("pad", "mask"):
            row = self.table[self.tokens.pad_id if name == "pad" else self.tokens.mask_id]
            return np.repeat(row[None], length, axis=0)
        raise InvalidInput(f"baseline: {name!r} is not one of {', '.join(BASELINES)}")

    def graph_rows(self, text: str, goal: Target) -> tuple[Encoding, np.ndarray, dict[str, np.ndarray]]:
        """The text's tokens, their embeddings (T, E) and the gradient graph's other inputs for `goal`."""
        encoding = self.tokens.encoding(text)
        return encoding, self.table[encoding.ids], goal.graph_inputs(encoding)

    async def explain(self, text: str, target: dict, deadline: float, steps: int | None = None,
                      method: str = "trapezoid", baseline: str = "zero") -> dict:
        steps = checked_steps(steps, method, self.default_steps, self.max_steps)
        check_text(text, "text", self.max_length, "explain.max_length")
        goal = resolve_target(text, target, self.schema)
        encoding, inputs, shared = self.graph_rows(text, goal)
        base = self.baseline(baseline, len(encoding))
        base[~encoding.is_text] = inputs[~encoding.is_text]
        alphas, weights = quadrature(steps, method)
        rows = [{"embeddings": point, **shared} for point in interpolate(inputs, base, alphas)]
        async with self.model.admit({"gradient": len(rows)}, deadline) as permit:
            outputs = await self.model.stage("gradient").submit(rows, deadline, permit)
        result = integrate(inputs, base, weights, np.stack([o["gradient"] for o in outputs]),
                           np.array([float(o["score"]) for o in outputs]))
        result.attributions = encoding.char_values(result.attributions, len(text))
        return {
            "task": "extract",
            "target": goal.describe(text),
            "characters": list(text),
            "attributions": [round(float(a), 6) for a in result.attributions],
            "normalized": [round(float(a), 4) for a in result.normalized],
            "score": result.score, "baseline_score": result.baseline_score, "delta": result.delta,
            "steps": steps, "method": method, "baseline": baseline,
        }
