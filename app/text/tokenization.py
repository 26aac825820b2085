"""Which tokenisation a model reads, chosen by its model.json: one token per character (the project's own
models, `vocab.txt`) or a pretrained encoder's word pieces (`tokenizer.json`). Both give an Encoding, token
ids with character offsets, so tasks map token spans back to the text the same way for either."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from app.text.subword import Encoding, SubwordTokenizer
from app.text.vocab import CharVocab

TokenizerKind = Literal["chars", "wordpiece"]


class Tokenization(Protocol):
    pad_id: int
    mask_id: int

    def encoding(self, text: str) -> Encoding: ...


def load_tokenization(kind: TokenizerKind, path: str | Path) -> Tokenization:
    """`chars`: a CharVocab vocab.txt; `wordpiece`: a fast tokenizer's tokenizer.json."""
    return SubwordTokenizer.load(path) if kind == "wordpiece" else CharVocab.load(path)
