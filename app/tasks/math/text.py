"""Numbers in math word problems: the question's numbers become slot tokens [N0], [N1], ... for the model,
and Ape210K-style equations become the expressions the model learns to write.

The model copies a question's number by naming its slot (one token, whatever its digits); numbers not in
the question (1, 100, 3.14...) it spells out digit by digit. Shared by training and serving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.runtime.errors import InvalidInput
from app.tasks.math.evaluator import MAX_DIGITS
from app.text import CharVocab, normalize
from app.text.subword import SubwordTokenizer

MAX_SLOTS = 20  # numbers past the 20th of a question stay digits
SLOT = "[N{}]"
SLOT_TOKENS = tuple(SLOT.format(i) for i in range(MAX_SLOTS))

# a mixed number 3(1/2), a fraction (1/2), a decimal or integer
NUMBER = r"\d+(?:\.\d+)?\(\d+/\d+\)|\(\d+(?:\.\d+)?/\d+(?:\.\d+)?\)|\d+(?:\.\d+)?"
NUMBER_RE = re.compile(NUMBER)
LITERAL_RE = re.compile(r"\d+(?:\.\d+)?")  # one literal as the evaluator reads it (a fraction holds two)
OPERATORS = "+-*/^"


@dataclass(frozen=True)
class Question:
    """A question with its first MAX_SLOTS numbers replaced by slots: `pieces` are characters and slot tokens."""
    pieces: list[str]
    numbers: list[str]  # the number written in slot i, as in the question (e.g. "3(1/2)", "(1/5)", "2.5")


def slot_text(text: str) -> tuple[list[str], list[str]]:
    """Cut the text at its first MAX_SLOTS numbers, found in the normalised text (full-width digits are
    numbers too): (the stretches of text around them as written, len(numbers) + 1 of them; the numbers,
    normalised, in order of appearance). Normalising keeps offsets, so the stretches are slices of `text`.

    A literal the evaluator would refuse (over MAX_DIGITS characters) is refused here, before any model work:
    copied into a slot it would only come back as a huge unusable expression. The scan is one linear pass."""
    norm = normalize(text)
    for m in LITERAL_RE.finditer(norm):
        if (size := m.end() - m.start()) > MAX_DIGITS:
            raise InvalidInput(f"question: a number of {size} digits, over the limit of {MAX_DIGITS}")
    stretches, numbers, at = [], [], 0
    for m in NUMBER_RE.finditer(norm):
        if len(numbers) == MAX_SLOTS:
            break
        stretches.append(text[at:m.start()])
        numbers.append(m.group())
        at = m.end()
    stretches.append(text[at:])
    return stretches, numbers


def slot_question(text: str) -> Question:
    """The question as the project's character model reads it: its characters (whitespace dropped) with
    each of its first MAX_SLOTS numbers replaced by a slot."""
    stretches, numbers = slot_text(text)
    pieces = []
    for i, stretch in enumerate(stretches):
        pieces += [c for c in normalize(stretch) if not c.isspace()] + ([SLOT.format(i)] if i < len(numbers) else [])
    return Question(pieces, numbers)


def source_ids(text: str, vocab: CharVocab, pieces: SubwordTokenizer | None = None) -> tuple[list[int], list[str]]:
    """[CLS] question-with-slots [SEP] as ids of `vocab`, and the numbers in the slots. The text between the
    slots is read one character a token (the project's vocabulary, normalised), or, given a pretrained encoder's
    tokenizer, as its word pieces of the text as written, the way the encoder was pretrained (whose ids
    `vocab`, the math vocabulary grown from it, keeps)."""
    if pieces is None:
        q = slot_question(text)
        get, unk = vocab.index.get, vocab.unk_id
        return [vocab.cls_id] + [get(p, unk) for p in q.pieces] + [vocab.sep_id], q.numbers
    stretches, numbers = slot_text(text)
    ids = [vocab.cls_id]
    for i, encoded in enumerate(pieces.encode_batch(stretches)):
        ids += encoded.ids[1:-1].tolist() + ([vocab.index[SLOT.format(i)]] if i < len(numbers) else [])
    return ids + [vocab.sep_id], numbers


def number_expression(number: str) -> str:
    """A number as written in a question -> an expression: 3(1/2) -> (3+1/2), (1/5) -> (1/5)."""
    if "(" in number and not number.startswith("("):
        whole, frac = number.split("(", 1)
        return f"({whole}+{frac[:-1]})"
    return number


def render(tokens: list[str], numbers: list[str]) -> str:
    """Target tokens -> a human-readable expression with the question's numbers written in."""
    lookup = {SLOT.format(i): number_expression(n) for i, n in enumerate(numbers)}
    return "".join(lookup.get(t, t) for t in tokens)
