"""POST /segment and POST /parse: unsupervised words and trees from the project's BERT by Perturbed Masking.

/segment probes only neighbouring characters inside each clause; /parse probes every pair of characters
of the sentence (n + n(n-1)/2 masked copies), averages them into a word-level impact matrix, then
decodes heads with Eisner's algorithm (over arc scores from app/tasks/mlm/parse.py) and a bracketed tree by
top-down splitting.
"""

from __future__ import annotations

import asyncio

import numpy as np

from app.runtime.admission import Permit
from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import ModelFile, Section, check_text, read_config
from app.tasks.mlm.ngrams import NgramStats, vocab_digest
from app.tasks.mlm.parse import (
    ARC_FEATURES,
    ROOT_FEATURES,
    WordTagger,
    dependency_scores,
    learned_heads,
    tag_feature_names,
    word_spans,
)
from app.tasks.mlm.perturbed import adjacent_pairs, all_pairs, impact_matrix, impacts, masked_rows, word_matrix
from app.tasks.mlm.segment import clauses, feature_names, gap_features, words_from_scores
from app.tasks.mlm.trees import eisner, mart
from app.text import CharVocab


class MLMLimits(Section):
    max_length: int  # characters per /segment text (probed clause by clause)
    max_parse_length: int  # characters per /parse sentence (all n(n-1)/2 pairs are probed)


class SegmentSection(Section):
    max_clause_length: int  # characters per probed clause
    threshold: float
    weights: list[float]
    features: list[str]
    ngrams: str | None = None  # corpus n-gram statistics (PMI, branching entropy), in the version folder
    rule: str = ""


class ParseSection(Section):
    orientation: str = "head_moves_dependent"
    root: str = "most_affected"
    center: bool = False
    tagger: str | None = None  # word-class tagger over hidden states, in the version folder
    tags: list[str] | None = None
    weights: list[float] | None = None  # None: the paper's rule over the impacts alone
    features: list[str] | None = None
    rule: str = ""


class MLMConfig(ModelFile):
    limits: MLMLimits
    segment: SegmentSection
    parse: ParseSection


class MLMTask:
    kind = "mlm"
    explainer = None

    def __init__(self, model: ModelHandle):
        config = read_config(model, MLMConfig)
        self.model, self.limits = model, config.limits
        self.vocab = CharVocab.load(model.directory / config.vocab)
        segment, parse = config.segment, config.parse
        self.clause_length, self.threshold = segment.max_clause_length, segment.threshold
        self.ngrams = None
        if segment.ngrams:
            self.ngrams = NgramStats.load(model.directory / segment.ngrams)
            if self.ngrams.digest != vocab_digest(self.vocab.tokens):
                raise ValueError("segment.ngrams: counted with another vocabulary than this model's")
        self.weights = np.asarray(segment.weights, dtype=np.float64)
        if len(self.weights) != len(feature_names(self.ngrams is not None)):
            raise ValueError(f"segment.weights: {len(self.weights)} values for "
                             f"{len(feature_names(self.ngrams is not None))} features")
        self.orientation, self.root_rule, self.center = parse.orientation, parse.root, parse.center
        self.tagger = WordTagger.load(model.directory / parse.tagger) if parse.tagger else None
        self.arc_weights = None
        if parse.weights is not None:
            self.arc_weights = np.asarray(parse.weights, dtype=np.float64)
            expected = len(ARC_FEATURES) + len(ROOT_FEATURES) + (
                0 if self.tagger is None else len(tag_feature_names(self.tagger.tags)))
            if len(self.arc_weights) != expected:
                raise ValueError(f"parse.weights: {len(self.arc_weights)} values for {expected} features")

    async def impacts(self, ids: np.ndarray, pairs: list[tuple[int, int]], deadline: float,
                      permit: Permit | None = None) -> np.ndarray:
        """The (n, n) impact matrix over `ids` for the given pairs (both directions)."""
        if not pairs:
            return np.zeros((len(ids), len(ids)))
        rows, keys = masked_rows(ids, self.vocab, pairs)
        outputs = await self.model.stage("encoder").submit([{"token_ids": r} for r in rows], deadline, permit)
        # numpy over every row's hidden states: off the event loop, which must keep answering (429s at once)
        return await asyncio.to_thread(lambda: impact_matrix(len(ids), impacts(keys, [o["hidden"] for o in outputs])))

    async def hidden(self, ids: np.ndarray, deadline: float, permit: Permit | None = None) -> np.ndarray:
        """(n, H) hidden states of the unmasked sentence, for the tagger."""
        row = np.concatenate([[self.vocab.cls_id], ids, [self.vocab.sep_id]]).astype(np.int64)
        (output,) = await self.model.stage("encoder").submit([{"token_ids": row}], deadline, permit)
        return output["hidden"][1:-1]

    def gap_features(self, matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return gap_features(matrix, None if self.ngrams is None else self.ngrams.features(ids))

    def segment_rows(self, text: str) -> int:
        """Masked copies /segment runs: per clause of m characters, m singles and m - 1 neighbour pairs."""
        return sum(2 * (e - s) - 1 for s, e in clauses(text, self.clause_length) if e - s > 1)

    @staticmethod
    def parse_rows(n: int) -> int:
        """Masked copies /parse runs on n characters: n singles and every pair."""
        return n + n * (n - 1) // 2 if n > 1 else 0

    async def segment(self, text: str, deadline: float) -> list[str]:
        check_text(text, "text", self.limits.max_length, "limits.max_length")
        async with self.model.admit({"encoder": self.segment_rows(text)}, deadline) as permit:
            return await self._segment(text, deadline, permit)

    async def _segment(self, text: str, deadline: float, permit: Permit) -> list[str]:
        ids = self.vocab.encode(text)
        runs = clauses(text, self.clause_length)
        matrices = await asyncio.gather(*(self.impacts(ids[s:e], adjacent_pairs(e - s), deadline, permit)
                                          for s, e in runs))
        def words() -> list[str]:
            scores = [self.gap_features(m, ids[s:e]) @ self.weights for m, (s, e) in zip(matrices, runs, strict=True)]
            return words_from_scores(text, runs, scores, self.threshold)

        return await asyncio.to_thread(words)

    async def parse(self, text: str, words: list[str] | None, deadline: float) -> dict:
        if words is None:
            check_text(text, "text", self.limits.max_parse_length, "limits.max_parse_length")
        else:
            if not words or any(not w or w != w.strip() for w in words):
                raise InvalidInput("words: give non-empty words without surrounding whitespace")
            if "".join(words) != "".join(text.split()):
                raise InvalidInput("words: they do not spell the text (whitespace in the text is ignored)")
            check_text("".join(words), "text", self.limits.max_parse_length, "limits.max_parse_length")
        n = len("".join(text.split()))
        rows = (self.segment_rows(text) if words is None else 0) + self.parse_rows(n) + (self.tagger is not None)
        async with self.model.admit({"encoder": rows}, deadline) as permit:
            if words is None:
                words = await self._segment(text, deadline, permit)
            return await self._parse(words, deadline, permit)

    async def _parse(self, words: list[str], deadline: float, permit: Permit) -> dict:
        sentence = "".join(words)
        ids = self.vocab.encode(sentence)
        spans = word_spans(words)
        tags = None
        if self.tagger is None:
            chars = await self.impacts(ids, all_pairs(len(sentence)), deadline, permit)
        else:  # the plain sentence rides in the same batches as its masked copies
            chars, hidden = await asyncio.gather(self.impacts(ids, all_pairs(len(sentence)), deadline, permit),
                                                 self.hidden(ids, deadline, permit))
            tags = self.tagger.probs(hidden, spans)

        def decode() -> dict:  # Eisner and the tree split are Python loops: off the event loop
            matrix = word_matrix(chars, spans)
            if self.arc_weights is None:
                heads = eisner(*dependency_scores(matrix, self.orientation, self.root_rule, self.center))
            else:
                heads = learned_heads(matrix, words, ids, self.ngrams, self.arc_weights, tags)
            return {"words": words, "heads": heads, "tree": mart(matrix, words)}

        return await asyncio.to_thread(decode)
