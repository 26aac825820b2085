"""DuIE 2.0 / SKE 2019 JSON lines -> training examples with character spans."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from app.tasks.extract.schema import VALUE, Schema
from app.text import normalize
from training.common.io import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class Example:
    text: str
    # gold triples as (subject, predicate, {slot: value}) for evaluation
    triples: list[tuple[str, str, dict[str, str]]]
    # subject span -> list of (label index, object span), spans inclusive [start, end]
    spans: dict[tuple[int, int], list[tuple[int, tuple[int, int]]]] = field(default_factory=dict)


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


# An abbreviation is derived from its full name: swapping either side would teach a false pair.
TIED_PREDICATES = {"简称"}


def entity_roles(example: Example, schema: Schema) -> dict[str, str]:
    """Entity string -> its first role ("predicate/subject" or "predicate/slot") in the example's triples;
    entities of tied predicates map to ""."""
    roles: dict[str, str] = {}
    for subject, predicate, obj in example.triples:
        if predicate not in schema.predicates:
            continue
        tied = predicate in TIED_PREDICATES
        roles[subject] = "" if tied else roles.get(subject, f"{predicate}/subject")
        for slot, value in obj.items():
            roles[value] = "" if tied else roles.get(value, f"{predicate}/{slot}")
    return roles


def entity_pools(examples: list[Example], schema: Schema) -> dict[str, list[str]]:
    """Role -> the distinct entity strings seen in that role in `examples`."""
    pools: dict[str, set[str]] = {}
    for e in examples:
        for entity, role in entity_roles(e, schema).items():
            pools.setdefault(role, set()).add(entity)
    return {role: sorted(names) for role, names in pools.items() if role}


def swap_entities(example: Example, pools: dict[str, list[str]], schema: Schema, rng: random.Random,
                  share: float = 0.5) -> Example:
    """A copy of the example with about `share` of its entities replaced, everywhere in the text and triples,
    by other entities seen in the same role: the model sees new names in known contexts (small-data
    augmentation). Entities that contain, or sit inside, another entity are kept, so no span breaks."""
    roles = entity_roles(example, schema)
    free = [a for a, r in roles.items() if a and r in pools and not any(a != b and (a in b or b in a) for b in roles)]
    swap = {a: rng.choice(pools[roles[a]]) for a in free if rng.random() < share}
    swap = {a: b for a, b in swap.items() if b != a and not any(b in c or c in b for c in roles)}
    if not swap:
        return example
    pattern = re.compile("|".join(re.escape(a) for a in sorted(swap, key=len, reverse=True)))
    triples = [(swap.get(s, s), p, {slot: swap.get(v, v) for slot, v in obj.items()})
               for s, p, obj in example.triples]
    out = Example(pattern.sub(lambda m: swap[m.group(0)], example.text), triples)
    if attach_spans(out, schema) > attach_spans(Example(example.text, example.triples), schema):
        return example  # a replacement broke another triple's text: keep the original
    return out
