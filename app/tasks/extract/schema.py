"""Relation schemas (DuIE 2.0 with compound objects, or SKE 2019 flat) and the triples they describe.

Each (predicate, slot) pair is one object label of the model: `饰演/@value` and `饰演/inWork` are
two labels, so a compound object is extracted slot by slot and put back together afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

VALUE = "@value"


@dataclass(frozen=True)
class Predicate:
    name: str
    subject_type: str
    object_types: dict[str, str]  # slot -> type, "@value" first


class Schema:
    def __init__(self, predicates: list[Predicate]):
        self.predicates = {p.name: p for p in predicates}
        # Labels: every predicate's @value, then the extra slots, in a fixed order.
        self.labels: list[tuple[str, str]] = [(p.name, VALUE) for p in predicates]
        self.labels += [(p.name, s) for p in predicates for s in p.object_types if s != VALUE]
        self.label_index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_records(cls, records: list[dict]) -> Schema:
        predicates = []
        for r in records:
            types = r["object_type"]
            if isinstance(types, str):  # SKE 2019: flat object
                types = {VALUE: types}
            types = {VALUE: types[VALUE], **{k: v for k, v in sorted(types.items()) if k != VALUE}}
            predicates.append(Predicate(r["predicate"], r["subject_type"], types))
        return cls(predicates)

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls.from_records([json.loads(line) for line in lines if line.strip()])

    def to_records(self) -> list[dict]:
        return [{"predicate": p.name, "subject_type": p.subject_type, "object_type": p.object_types}
                for p in self.predicates.values()]
