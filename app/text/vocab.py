"""A character vocabulary: one token per character, so token i is character i of the text."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from app.text.normalize import normalize
from app.text.subword import Encoding

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID = 0, 1  # where the project's own vocabularies put them
# Always in the project's vocabularies, however rare: the math solver writes expressions with them.
MATH_TOKENS = tuple("0123456789.+-*/^()%=")


class CharVocab:
    """Special tokens are found by name, so a Hugging Face BERT vocab.txt (e.g. bert-base-chinese,
    where [PAD] is 0 and [UNK] 100) works as well as the project's own."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.index]
        if missing:
            raise ValueError(f"vocabulary lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.index[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of the normalised text, one per character, shape (len(text),)."""
        get, unk = self.index.get, self.unk_id
        return np.fromiter((get(c, unk) for c in normalize(text)), dtype=np.int64, count=len(text))

    def encoding(self, text: str) -> Encoding:
        """`encode` with offsets: token i is character i."""
        at = np.arange(len(text), dtype=np.int64)
        return Encoding(self.encode(text), np.stack([at, at + 1], axis=1))

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        return cls([line for line in lines if line])

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 3, max_size: int = 8000,
              always: Iterable[str] = ()) -> CharVocab:
        """Special tokens, then the `always` tokens, then the most frequent normalised characters
        (whitespace excluded), counted by the tokenizers library's WordLevel trainer."""
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        head = list(SPECIAL_TOKENS) + [t for t in always if t not in SPECIAL_TOKENS]
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), behavior="isolated")
        trainer = trainers.WordLevelTrainer(vocab_size=max_size, min_frequency=min_count, special_tokens=head,
                                            show_progress=False)
        tokenizer.train_from_iterator((normalize(t) for t in texts), trainer=trainer)
        ranked = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])  # ids follow frequency
        chars = [t for t, _ in ranked[len(head):] if len(t) == 1 and t.isprintable() and not t.isspace()]
        return cls(head + chars)
