"""DuIE 2.0 / SKE 2019 JSON lines -> training examples with character spans."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from app.tasks.extract_schema import VALUE, Schema
from app.text import normalize

log = logging.getLogger(__name__)


@dataclass
class Example:
    text: str
    # gold triples as (subject, predicate, {slot: value}) for evaluation
    triples: list[tuple[str, str, dict[str, str]]]
    # subject span -> list of (label index, object span), spans inclusive [start, end]
    spans: dict[tuple[int, int], list[tuple[int, tuple[int, int]]]] = field(default_factory=dict)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_record(record: dict) -> Example:
    """Both formats: DuIE 2.0 objects are {"@value", slots...}, SKE 2019 objects are strings."""
    triples = []
    for spo in record.get("spo_list", []):
        obj = spo["object"]
        obj = {VALUE: obj} if isinstance(obj, str) else dict(obj)
        triples.append((spo["subject"], spo["predicate"], obj))
    return Example(record["text"], triples)


def locate(text: str, piece: str) -> tuple[int, int] | None:
    start = text.find(normalize(piece)) if piece else -1
    return None if start < 0 else (start, start + len(piece) - 1)


def attach_spans(example: Example, schema: Schema) -> int:
    """Fill `example.spans`; returns how many triples could not be placed (skipped, not fatal)."""
    norm = normalize(example.text)
    missed = 0
    for subject, predicate, obj in example.triples:
        s_span = locate(norm, subject)
        if s_span is None or predicate not in schema.predicates:
            missed += 1
            continue
        objects = example.spans.setdefault(s_span, [])
        for slot, value in obj.items():
            o_span = locate(norm, value)
            label = schema.label_index.get((predicate, slot))
            if o_span is None or label is None:
                missed += 1 if slot == VALUE else 0
                continue
            if (label, o_span) not in objects:
                objects.append((label, o_span))
    return missed


def load_examples(paths: list[Path], schema: Schema) -> list[Example]:
    examples = [parse_record(r) for p in paths for r in read_jsonl(p)]
    missed = sum(attach_spans(e, schema) for e in examples)
    if missed:
        log.warning("%d triples not found verbatim in their text were skipped", missed)
    return examples


def split_of(text: str) -> str:
    """A stable split by text hash: 80% train, 8% dev (thresholds, checkpoints), 12% test (report)."""
    bucket = int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "dev" if bucket < 88 else "test"
