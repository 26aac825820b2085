"""Beam search over expression tokens, constrained by the expression grammar.

At every step only tokens that keep the prefix a valid start of an expression are allowed: a slot of a
number the question has, digits (one decimal point per number), operators between operands, balanced
parentheses, and the end only after a complete expression. Guards against output that never stops or
loops: a maximum length, and no suffix repeated REPEAT_LIMIT times in a row. numpy only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.tasks.math.text import SLOT_TOKENS
from app.text import CharVocab

OPERAND_START, AFTER_DIGIT, AFTER_POINT, AFTER_OPERAND = "operand_start", "digit", "point", "operand"
MAX_DIGITS = 12  # per number the model spells out
MAX_DEPTH = 10  # open parentheses
REPEAT_LIMIT = 4  # a block of 2..8 tokens repeated this often in a row is a loop


@dataclass(frozen=True)
class State:
    """Where a prefix stands in the grammar."""
    kind: str = OPERAND_START
    depth: int = 0
    digits: int = 0  # digits of the number being spelled out
    point: bool = False  # whether that number has its decimal point


@dataclass
class Hypothesis:
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0  # sum of log-probabilities
    state: State = State()
    cache: Any = None  # the decoder's keys/values for the tokens before the last one


class Grammar:
    """Token classes of a vocabulary, and the tokens allowed after each grammar state."""

    def __init__(self, vocab: CharVocab):
        ids = vocab.index
        self.size = len(vocab)
        self.end = vocab.sep_id
        self.slots = np.array([ids[t] for t in SLOT_TOKENS if t in ids])
        self.digits = np.array([ids[d] for d in "0123456789"])
        self.point, self.open, self.close = ids["."], ids["("], ids[")"]
        self.operators = np.array([ids[o] for o in "+-*/^"])
        self.kinds = {int(t): "slot" for t in self.slots} | {int(t): "digit" for t in self.digits}
        self.kinds |= {int(t): "operator" for t in self.operators}
        self.kinds |= {self.point: "point", self.open: "open", self.close: "close", self.end: "end"}

    def allowed(self, state: State, n_slots: int) -> np.ndarray:
        """Ids of the tokens that may follow a prefix in `state` (slots only for the question's numbers)."""
        if state.kind == OPERAND_START:
            parts = [self.slots[:n_slots], self.digits] + ([[self.open]] if state.depth < MAX_DEPTH else [])
        elif state.kind == AFTER_POINT:
            parts = [self.digits]
        else:
            parts = [self.operators] + ([[self.close]] if state.depth else [[self.end]])
            if state.kind == AFTER_DIGIT:
                parts += ([self.digits] if state.digits < MAX_DIGITS else []) + ([] if state.point else [[self.point]])
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])

    def advance(self, state: State, token: int) -> State:
        kind = self.kinds[token]
        if kind == "slot":
            return State(AFTER_OPERAND, state.depth)
        if kind == "digit":
            spelled = state.kind in (AFTER_DIGIT, AFTER_POINT)
            return State(AFTER_DIGIT, state.depth, state.digits + 1 if spelled else 1, state.point and spelled)
        if kind == "point":
            return State(AFTER_POINT, state.depth, state.digits, True)
        if kind == "operator":
            return State(OPERAND_START, state.depth)
        if kind == "open":
            return State(OPERAND_START, state.depth + 1)
        if kind == "close":
            return State(AFTER_OPERAND, state.depth - 1)
        return state  # end


def loops(tokens: list[int]) -> bool:
    """Whether the sequence ends in a block of 2..8 tokens repeated REPEAT_LIMIT times in a row."""
    for size in range(2, 9):
        span = size * REPEAT_LIMIT
        if len(tokens) >= span and all(tokens[-span:][i] == tokens[-size:][i % size] for i in range(span)):
            return True
    return False


StepFn = Callable[[list[Any], list[int]], Awaitable[tuple[list[np.ndarray], list[Any]]]]


async def beam_search(first: np.ndarray, cache: Any, step: StepFn, grammar: Grammar, n_slots: int, beam_size: int,
                      max_length: int) -> list[Hypothesis]:
    """Finished hypotheses, best first. `first`: the log-probabilities of the first token, `cache` the
    decoder state after the question; `step(caches, tokens)` feeds each beam's newest token and gives
    the next log-probabilities and the grown caches (one batcher row per beam, so the beams of
    concurrent requests share batches)."""
    live, logprobs, finished = [Hypothesis(cache=cache)], [first], []
    for _ in range(max_length):
        candidates = []
        for h, lp in zip(live, logprobs, strict=True):
            allowed = grammar.allowed(h.state, n_slots)
            scores = lp[allowed]
            for i in np.argsort(-scores)[:beam_size]:
                candidates.append((h.score + float(scores[i]), h, int(allowed[i])))
        candidates.sort(key=lambda c: -c[0])
        live = []
        for score, h, token in candidates:
            if token == grammar.end:
                finished.append(Hypothesis(h.tokens, score, h.state))
                continue
            tokens = h.tokens + [token]
            if not loops(tokens):
                live.append(Hypothesis(tokens, score, grammar.advance(h.state, token), h.cache))
            if len(live) == beam_size:
                break
        finished.sort(key=lambda h: -h.score)
        finished = finished[:beam_size]
        # log-probabilities only add negatives: no live beam can overtake the worst kept finished one
        if not live or (len(finished) == beam_size and finished[-1].score >= live[0].score):
            break
        logprobs, caches = await step([h.cache for h in live], [h.tokens[-1] for h in live])
        for h, grown in zip(live, caches, strict=True):
            h.cache = grown
    return finished
