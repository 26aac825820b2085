"""A character vocabulary: one token per character, so token i is character i of the text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from app.text.normalize import normalize

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID = 0, 1


class CharVocab:
    def __init__(self, tokens: list[str]):
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of the normalised text, one per character, shape (len(text),)."""
        get = self.index.get
        return np.fromiter((get(c, UNK_ID) for c in normalize(text)), dtype=np.int64, count=len(text))

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        return cls([line for line in lines if line])

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 3, max_size: int = 8000) -> CharVocab:
        """Most frequent normalised characters (whitespace excluded) after the special tokens."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(normalize(text))
        chars = [c for c, n in counts.most_common() if n >= min_count and not c.isspace() and c.isprintable()]
        return cls(list(SPECIAL_TOKENS) + chars[: max_size - len(SPECIAL_TOKENS)])
