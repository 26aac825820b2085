"""POST /extract: text -> subject stage -> one object-stage row per subject -> triples.

The model.json `tokenizer` says what a row's tokens are: characters (the DGCNN, vocab.txt) or a pretrained
encoder's word pieces (tokenizer.json); either way spans come back as character offsets into the text.
Both stages go through their model's batchers, so the object rows of many concurrent requests
(and of many texts in one request) share batches.
"""

from __future__ import annotations

import asyncio

import numpy as np
from pydantic import Field

from app.runtime.admission import Permit
from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.base import ModelFile, Section, check_text, read_config
from app.tasks.extract.decode import Thresholds, build_triples, find_subjects
from app.tasks.extract.explain import ExplainSection, ExtractExplainer
from app.tasks.extract.schema import Schema
from app.text.subword import Encoding
from app.text.tokenization import TokenizerKind, load_tokenization


class ExtractLimits(Section):
    max_length: int  # characters per text
    max_texts: int  # texts per request


class ThresholdSection(Section):
    subject_start: float
    subject_end: float
    object_start: float
    object_end: float


class ExtractConfig(ModelFile):
    tokenizer: TokenizerKind = "chars"  # how `vocab` reads: one token per character, or word pieces
    schema_file: str = Field(alias="schema")  # the DuIE predicate schema, in the version folder
    limits: ExtractLimits
    thresholds: ThresholdSection
    explain: ExplainSection | None = None  # present when a gradient graph was exported


class ExtractTask:
    kind = "extract"

    def __init__(self, model: ModelHandle):
        config = read_config(model, ExtractConfig)
        self.model, self.limits = model, config.limits
        self.tokens = load_tokenization(config.tokenizer, model.directory / config.vocab)
        self.max_tokens = config.stages["subject"].get("max_length")
        self.schema = Schema.load(model.directory / config.schema_file)
        self.thresholds = Thresholds(**config.thresholds.model_dump())
        self.explainer = (ExtractExplainer(model, config.explain, self.tokens, self.schema)
                          if config.explain is not None and "gradient" in config.stages else None)

    def validate(self, texts: list[str]) -> None:
        if not texts:
            raise InvalidInput("texts: give at least one text")
        if len(texts) > self.limits.max_texts:
            raise InvalidInput(f"texts: {len(texts)} texts, over the model's limits.max_texts of "
                               f"{self.limits.max_texts}")
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]", self.limits.max_length, "limits.max_length")

    def encode(self, texts: list[str]) -> list[Encoding]:
        encodings = [self.tokens.encoding(t) for t in texts]
        for i, enc in enumerate(encodings):
            if self.max_tokens and len(enc) > self.max_tokens:
                raise InvalidInput(f"texts[{i}]: {len(enc)} tokens, over the model's {self.max_tokens}")
        return encodings

    async def extract(self, texts: list[str], deadline: float) -> list[list[dict]]:
        self.validate(texts)
        encodings = self.encode(texts)
        # Admission covers both stages: the object rows are estimated at two subjects a text.
        async with self.model.admit({"subject": len(texts), "object": 2 * len(texts)}, deadline) as permit:
            return await self._extract(texts, encodings, deadline, permit)

    async def _extract(self, texts: list[str], encodings: list[Encoding], deadline: float,
                       permit: Permit) -> list[list[dict]]:
        subject_rows = [{"token_ids": enc.ids} for enc in encodings]
        encoded = await self.model.stage("subject").submit(subject_rows, deadline, permit)

        object_rows, owners = [], []
        for i, out in enumerate(encoded):
            n = len(encodings[i])
            for span in find_subjects(out["subject_probs"], self.thresholds, encodings[i].offsets):
                object_rows.append({"hidden": out["hidden"], "mask": np.ones(n, np.float32),
                                    "subject": np.array([span.start, span.end], np.int64)})
                owners.append((i, span))
        objects = await self.model.stage("object").submit(object_rows, deadline, permit)

        # Decoding is numpy work proportional to the number of subjects: keep it off the event loop.
        def decode() -> list[list[dict]]:
            results: list[list[dict]] = [[] for _ in texts]
            for (i, span), out in zip(owners, objects, strict=True):
                results[i] += build_triples(texts[i], span, out["object_probs"], self.schema, self.thresholds,
                                            encodings[i].offsets)
            for triples in results:
                triples.sort(key=lambda t: -t["score"])
            return results

        return await asyncio.to_thread(decode)

