"""Character vocabulary and word2vec character embeddings trained on the project's own corpus.

The 2019 DGCNN entry fed pretrained embeddings into the encoder; with no pretrained model to
download, the project trains its own skip-gram vectors (gensim) on ../shared/data/corpus.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from app.text import CharVocab, normalize
from training.common.paths import DATA

log = logging.getLogger(__name__)

CORPUS_FILES = ("fewclue_unlabeled.txt.gz", "classic_four_novels.txt.gz", "fudan_textcls.txt.gz")


def corpus_lines(max_chars: int, data: Path = DATA) -> Iterator[str]:
    """Normalised corpus paragraphs, round-robin over the files, up to `max_chars` characters."""
    budget = max_chars
    for name in CORPUS_FILES:
        share = budget // (len(CORPUS_FILES) - CORPUS_FILES.index(name))
        used = 0
        with gzip.open(data / "corpus" / name, "rt", encoding="utf-8") as f:
            for line in f:
                line = normalize(line.strip())
                if len(line) < 5:
                    continue
                yield line
                used += len(line)
                if used >= share:
                    break
        budget -= used


def train_char_vectors(
    texts: Iterable[str], vocab: CharVocab, dim: int = 128, epochs: int = 3, workers: int = 2
) -> np.ndarray:
    """Skip-gram vectors for every vocabulary token; rows for tokens never seen stay small random."""
    from gensim.models import Word2Vec

    sentences = [[c for c in t if not c.isspace()] for t in texts]
    w2v = Word2Vec(sentences, vector_size=dim, window=5, min_count=1, sg=1, negative=5,
                   workers=workers, epochs=epochs, seed=1)
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.05, (len(vocab), dim)).astype(np.float32)
    matrix[0] = 0.0  # [PAD]
    found = 0
    for i, token in enumerate(vocab.tokens):
        if token in w2v.wv:
            matrix[i] = w2v.wv[token]
            found += 1
    scale = np.std(matrix[5:]) or 1.0
    log.info("char vectors: %d/%d tokens from word2vec", found, len(vocab))
    return matrix / scale * 0.1


def main(out: Path, task_texts: list[str], max_chars: int = 20_000_000, dim: int = 128) -> None:
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(corpus_lines(max_chars))
    vocab = CharVocab.build(corpus + task_texts, min_count=3, max_size=8000)
    vocab.save(out / "vocab.txt")
    log.info("vocabulary: %d tokens from %d corpus lines", len(vocab), len(corpus))
    np.save(out / "char_vectors.npy", train_char_vectors(corpus + task_texts, vocab, dim=dim))
