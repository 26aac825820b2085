"""Rows for a pretrained-encoder reader (numpy only), shared by serving and by evaluation during training.

A row is [CLS] question [SEP] passage window [SEP] in the encoder's word pieces, token types 0 then 1,
as BERT was pretrained on sentence pairs. The passage is still read in character windows
(app/tasks/qa/decode.py), and the reader's per-token start/end probabilities are put back on the
window's characters through the tokenizer's offsets: a token's start probability on its first
character, its end probability on its last. So best spans and multi-passage voting run unchanged, and
every span is a stretch of the passage as given (an [UNK] or a word piece covers exactly its characters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.text.subword import Encoding, SubwordTokenizer


@dataclass(frozen=True)
class PairRow:
    token_ids: np.ndarray  # (n,) int64
    type_ids: np.ndarray  # (n,) int64: 0 for [CLS] question [SEP], 1 for the window and its [SEP]
    offsets: np.ndarray  # (n, 2) [start, end) into the window; empty for the question and special tokens


def question_ids(tokens: SubwordTokenizer, question: str, max_tokens: int) -> np.ndarray:
    """[CLS] question [SEP], cut to `max_tokens` (the [SEP] kept)."""
    ids = tokens.encode(question).ids
    return ids if len(ids) <= max_tokens else np.concatenate([ids[: max_tokens - 1], ids[-1:]])


def pair_row(question: np.ndarray, window: Encoding, max_tokens: int) -> PairRow:
    """The question's ids and a window's encoding ([CLS] pieces [SEP]) -> one row of at most `max_tokens`
    (pieces past the room are left out: their characters get probability 0)."""
    room = max_tokens - len(question) - 1  # the window's pieces, its closing [SEP] apart
    pieces, piece_offsets = window.ids[1:-1][:room], window.offsets[1:-1][:room]
    ids = np.concatenate([question, pieces, window.ids[-1:]])
    types = np.concatenate([np.zeros(len(question), np.int64), np.ones(len(pieces) + 1, np.int64)])
    offsets = np.concatenate([np.zeros((len(question), 2), np.int64), piece_offsets, np.zeros((1, 2), np.int64)])
    return PairRow(ids, types, offsets)


def char_probs(probs: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """(n, 2) per-token start/end probabilities -> (length, 2) per window character."""
    out = np.zeros((length, 2), np.float32)
    text = offsets[:, 1] > offsets[:, 0]
    np.maximum.at(out[:, 0], offsets[text, 0], probs[text, 0])
    np.maximum.at(out[:, 1], offsets[text, 1] - 1, probs[text, 1])
    return out


def covering_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """The first and last token overlapping characters [start, end) (training targets: an answer that starts
    or ends inside a word piece is pointed at by the pieces that hold it); None when no token does."""
    text = offsets[:, 1] > offsets[:, 0]
    inside = np.flatnonzero(text & (offsets[:, 0] < end) & (offsets[:, 1] > start))
    return (int(inside[0]), int(inside[-1])) if len(inside) else None
