"""POST /segment and POST /parse: unsupervised words and trees from the project's BERT by Perturbed Masking.

/segment probes only neighbouring characters inside each clause; /parse probes every pair of characters
of the sentence (n + n(n-1)/2 masked copies), averages them into a word-level impact matrix, then
decodes heads with Eisner's algorithm (over arc scores from app/tasks/parsing.py) and a bracketed tree by
top-down splitting.
"""

from __future__ import annotations

import asyncio

import numpy as np

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.ngrams import NgramStats, vocab_digest
from app.tasks.parsing import (
    ARC_FEATURES,
    ROOT_FEATURES,
    WordTagger,
    dependency_scores,
    learned_heads,
    tag_feature_names,
    word_spans,
)
from app.tasks.perturbed import adjacent_pairs, all_pairs, impact_matrix, impacts, masked_rows, word_matrix
from app.tasks.segmentation import clauses, feature_names, gap_features, words_from_scores
from app.tasks.trees import eisner, mart
from app.text import CharVocab


class PerturbedMaskingTask:
    def __init__(self, model: ModelHandle):
        config = model.config
        self.model = model
        self.vocab = CharVocab.load(model.directory / config["vocab"])
        self.max_length = int(config["max_length"])  # characters per /segment text
        self.clause_length = int(config["max_clause_length"])  # characters per probed clause
        segment = config["segment"]
        self.threshold = float(segment["threshold"])
        self.ngrams = None
        if segment.get("ngrams"):
            self.ngrams = NgramStats.load(model.directory / segment["ngrams"])
            if self.ngrams.digest != vocab_digest(self.vocab.tokens):
                raise ValueError("segment.ngrams: counted with another vocabulary than this model's")
        self.weights = np.asarray(segment["weights"], dtype=np.float64)
        if len(self.weights) != len(feature_names(self.ngrams is not None)):
            raise ValueError(f"segment.weights: {len(self.weights)} values for "
                             f"{len(feature_names(self.ngrams is not None))} features")
        parse = config["parse"]
        self.parse_max_length = int(parse["max_length"])
        self.orientation = parse.get("orientation", "head_moves_dependent")
        self.root_rule = parse.get("root", "most_affected")
        self.center = bool(parse.get("center", False))
        self.tagger = WordTagger.load(model.directory / parse["tagger"]) if parse.get("tagger") else None
        self.arc_weights = None  # None: the paper's rule over the impacts alone
        if parse.get("weights") is not None:
            self.arc_weights = np.asarray(parse["weights"], dtype=np.float64)
            expected = len(ARC_FEATURES) + len(ROOT_FEATURES) + (
                0 if self.tagger is None else len(tag_feature_names(self.tagger.tags)))
            if len(self.arc_weights) != expected:
                raise ValueError(f"parse.weights: {len(self.arc_weights)} values for {expected} features")

    async def impacts(self, ids: np.ndarray, pairs: list[tuple[int, int]], deadline: float) -> np.ndarray:
        """The (n, n) impact matrix over `ids` for the given pairs (both directions)."""
        if not pairs:
            return np.zeros((len(ids), len(ids)))
        rows, keys = masked_rows(ids, self.vocab, pairs)
        outputs = await self.model.stage("encoder").submit([{"token_ids": r} for r in rows], deadline)
        return impact_matrix(len(ids), impacts(keys, [o["hidden"] for o in outputs]))

    async def hidden(self, ids: np.ndarray, deadline: float) -> np.ndarray:
        """(n, H) hidden states of the unmasked sentence, for the tagger."""
        row = np.concatenate([[self.vocab.cls_id], ids, [self.vocab.sep_id]]).astype(np.int64)
        (output,) = await self.model.stage("encoder").submit([{"token_ids": row}], deadline)
        return output["hidden"][1:-1]

    def _check(self, text: str, field: str, limit: int) -> None:
        if not text.strip():
            raise InvalidInput(f"{field}: empty text")
        if len(text) > limit:
            raise InvalidInput(f"{field}: {len(text)} characters, over the limit of {limit}")

    def gap_features(self, matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return gap_features(matrix, None if self.ngrams is None else self.ngrams.features(ids))

    async def segment(self, text: str, deadline: float) -> list[str]:
        self._check(text, "text", self.max_length)
        ids = self.vocab.encode(text)
        runs = clauses(text, self.clause_length)
        matrices = await asyncio.gather(*(self.impacts(ids[s:e], adjacent_pairs(e - s), deadline) for s, e in runs))
        scores = [self.gap_features(m, ids[s:e]) @ self.weights for m, (s, e) in zip(matrices, runs, strict=True)]
        return words_from_scores(text, runs, scores, self.threshold)

    async def parse(self, text: str, words: list[str] | None, deadline: float) -> dict:
        if words is None:
            self._check(text, "text", self.parse_max_length)
            words = await self.segment(text, deadline)
        else:
            if not words or any(not w or w != w.strip() for w in words):
                raise InvalidInput("words: give non-empty words without surrounding whitespace")
            if "".join(words) != "".join(text.split()):
                raise InvalidInput("words: they do not spell the text (whitespace in the text is ignored)")
        sentence = "".join(words)
        self._check(sentence, "text", self.parse_max_length)
        ids = self.vocab.encode(sentence)
        spans = word_spans(words)
        tags = None
        if self.tagger is None:
            chars = await self.impacts(ids, all_pairs(len(sentence)), deadline)
        else:  # the plain sentence rides in the same batches as its masked copies
            chars, hidden = await asyncio.gather(self.impacts(ids, all_pairs(len(sentence)), deadline),
                                                 self.hidden(ids, deadline))
            tags = self.tagger.probs(hidden, spans)
        matrix = word_matrix(chars, spans)
        if self.arc_weights is None:
            heads = eisner(*dependency_scores(matrix, self.orientation, self.root_rule, self.center))
        else:
            heads = learned_heads(matrix, words, ids, self.ngrams, self.arc_weights, tags)
        return {"words": words, "heads": heads, "tree": mart(matrix, words)}
