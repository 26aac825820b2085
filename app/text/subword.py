"""A pretrained encoder's own tokenizer (word pieces), with character offsets back into the input text.

Serving reads the `tokenizer.json` that training copied into the model version folder, through the
`tokenizers` library alone (no torch, no transformers). Offsets come from the tokenizer's alignment
tracking, so they index the text as given even where its normaliser lower-cases, strips accents or
splits CJK characters: `text[start:end]` is always the stretch of input a token came from. Special
tokens ([CLS], [SEP]) have empty offsets; whitespace belongs to no token; an unknown word is one [UNK]
covering the whole word.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_NAMES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class Encoding:
    ids: np.ndarray  # (n,) int64 token ids, special tokens included
    offsets: np.ndarray  # (n, 2) int64 [start, end) into the text; start == end for special tokens

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_text(self) -> np.ndarray:
        """(n,) bool: which tokens stand for some of the text (not [CLS], [SEP])."""
        return self.offsets[:, 1] > self.offsets[:, 0]

    def char_span(self, first: int, last: int) -> tuple[int, int]:
        """Tokens first..last (inclusive) -> [start, end) into the text."""
        return int(self.offsets[first, 0]), int(self.offsets[last, 1])

    def token_span(self, start: int, end: int) -> tuple[int, int] | None:
        """Characters [start, end) -> the inclusive token span that covers exactly them, or None when a
        boundary falls inside a token (the span cannot be pointed at) or no token covers them."""
        text_tokens = np.flatnonzero(self.is_text)
        first = text_tokens[self.offsets[text_tokens, 0] == start]
        last = text_tokens[self.offsets[text_tokens, 1] == end]
        if not len(first) or not len(last) or last[-1] < first[0]:
            return None
        return int(first[0]), int(last[-1])

    def char_values(self, per_token: np.ndarray, length: int) -> np.ndarray:
        """(n,) values per token -> (length,) values per character: a token's value is shared evenly by the
        characters it covers (sums are kept); characters no token covers (whitespace) get 0."""
        out = np.zeros(length, np.float64)
        for (start, end), value in zip(self.offsets, per_token, strict=True):
            if end > start:
                out[start:end] += value / (end - start)
        return out


class SubwordTokenizer:
    """Token ids and character offsets from a Hugging Face fast tokenizer's `tokenizer.json`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        tokenizer.no_truncation()
        tokenizer.no_padding()
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        missing = [t for t in SPECIAL_NAMES if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing} (a BERT-style vocabulary is needed)")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_NAMES)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> Encoding:
        """[CLS] word pieces [SEP], as the encoder was pretrained on, with offsets into `text`."""
        encoded = self.tokenizer.encode(text)
        return Encoding(np.asarray(encoded.ids, np.int64), np.asarray(encoded.offsets, np.int64).reshape(-1, 2))

    encoding = encode  # the name app/text/tokenization.py's protocol uses

    def encode_batch(self, texts: list[str]) -> list[Encoding]:
        return [Encoding(np.asarray(e.ids, np.int64), np.asarray(e.offsets, np.int64).reshape(-1, 2))
                for e in self.tokenizer.encode_batch(texts)]
