"""Admission at the door: a request takes one permit for all its estimated work before its first stage.

The stages of a model share one inference thread, so its work adds up in seconds: a permit's cost is the
request's estimated rows per stage times each stage's measured seconds per row. A request is refused at
once (Overloaded: 429 with Retry-After) when the work already admitted plus its own could not finish
before its deadline, or when its rows would take the model past `max_rows` in flight (a bound on queued
memory: the model.json limits keep every accepted request under it). Once admitted, a
request's follow-up stages are never refused; as its rows run, its permit's remaining cost shrinks.
Until a stage has run a batch its cost per row is unknown (0): only the row bound applies.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from app.runtime.errors import DeadlineExceeded, Overloaded

SAFETY = 0.7  # admit only work estimated to end within this share of the time left: estimates are rough


class Stage(Protocol):
    seconds_per_row: float


@dataclass(eq=False)
class Permit:
    deadline: float  # time.monotonic()
    rows: int  # estimated rows not run yet
    cost: float  # estimated inference seconds not run yet

    def spent(self, rows: int, seconds: float) -> None:
        self.rows, self.cost = max(self.rows - rows, 0), max(self.cost - seconds, 0.0)


class Admission:
    def __init__(self, name: str, stages: Mapping[str, Stage], max_rows: int):
        self.name, self.stages, self.max_rows = name, stages, max_rows
        self.permits: set[Permit] = set()

    def cost(self, rows: Mapping[str, int]) -> float:
        return sum(n * self.stages[stage].seconds_per_row for stage, n in rows.items())

    @asynccontextmanager
    async def permit(self, rows: Mapping[str, int], deadline: float) -> AsyncIterator[Permit]:
        """Hold a permit for `rows` (stage -> estimated rows) while the request runs; Overloaded at once if
        it cannot be admitted."""
        if unknown := set(rows) - set(self.stages):
            raise ValueError(f"model {self.name} has no stage {sorted(unknown)}")
        n, cost = sum(rows.values()), self.cost(rows)
        rows_ahead = sum(p.rows for p in self.permits)
        ahead = sum(p.cost for p in self.permits)
        left = SAFETY * (deadline - time.monotonic())
        if left <= 0:
            raise DeadlineExceeded(f"model {self.name}: the request's deadline passed before it was admitted")
        retry_after = max(1, math.ceil(ahead))
        if rows_ahead + n > self.max_rows:
            raise Overloaded(f"model {self.name} is at capacity ({rows_ahead} rows in flight, {n} more asked, "
                             f"limit {self.max_rows}); retry later", retry_after)
        if ahead + cost > left:
            raise Overloaded(f"model {self.name} cannot finish this request in time (about {ahead:.1f}s of work "
                             f"ahead, {cost:.1f}s of its own, {max(left, 0):.1f}s left); retry later", retry_after)
        permit = Permit(deadline, n, cost)
        self.permits.add(permit)
        try:
            yield permit
        finally:
            self.permits.discard(permit)
