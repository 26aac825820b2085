"""POST /extract: text -> subject stage -> one object-stage row per subject -> triples.

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
from app.text import CharVocab


class ExtractLimits(Section):
    max_length: int  # characters per text
    max_texts: int  # texts per request


class ThresholdSection(Section):
    subject_start: float
    subject_end: float
    object_start: float
    object_end: float


class ExtractConfig(ModelFile):
    schema_file: str = Field(alias="schema")  # the DuIE predicate schema, in the version folder
    limits: ExtractLimits
    thresholds: ThresholdSection
    explain: ExplainSection | None = None  # present when a gradient graph was exported


class ExtractTask:
    kind = "extract"

    def __init__(self, model: ModelHandle):
        config = read_config(model, ExtractConfig)
        self.model, self.limits = model, config.limits
        self.vocab = CharVocab.load(model.directory / config.vocab)
        self.schema = Schema.load(model.directory / config.schema_file)
        self.thresholds = Thresholds(**config.thresholds.model_dump())
        self.explainer = (ExtractExplainer(model, config.explain, self.vocab, self.schema)
                          if config.explain is not None and "gradient" in config.stages else None)

    def validate(self, texts: list[str]) -> None:
        if not texts:
            raise InvalidInput("texts: give at least one text")
        if len(texts) > self.limits.max_texts:
            raise InvalidInput(f"texts: {len(texts)} texts, over the model's limits.max_texts of "
                               f"{self.limits.max_texts}")
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]", self.limits.max_length, "limits.max_length")

    async def extract(self, texts: list[str], deadline: float) -> list[list[dict]]:
        self.validate(texts)
        # Admission covers both stages: the object rows are estimated at two subjects a text.
        async with self.model.admit({"subject": len(texts), "object": 2 * len(texts)}, deadline) as permit:
            return await self._extract(texts, deadline, permit)

    async def _extract(self, texts: list[str], deadline: float, permit: Permit) -> list[list[dict]]:
        subject_rows = [{"token_ids": self.vocab.encode(t)} for t in texts]
        encoded = await self.model.stage("subject").submit(subject_rows, deadline, permit)

        object_rows, owners = [], []
        for i, out in enumerate(encoded):
            n = len(texts[i])
            for span in find_subjects(out["subject_probs"], self.thresholds):
                object_rows.append({"hidden": out["hidden"], "mask": np.ones(n, np.float32),
                                    "subject": np.array([span.start, span.end], np.int64)})
                owners.append((i, span))
        objects = await self.model.stage("object").submit(object_rows, deadline, permit)

        # Decoding is numpy work proportional to the number of subjects: keep it off the event loop.
        def decode() -> list[list[dict]]:
            results: list[list[dict]] = [[] for _ in texts]
            for (i, span), out in zip(owners, objects, strict=True):
                results[i] += build_triples(texts[i], span, out["object_probs"], self.schema, self.thresholds)
            for triples in results:
                triples.sort(key=lambda t: -t["score"])
            return results

        return await asyncio.to_thread(decode)

