"""POST /extract: text -> subject stage -> one object-stage row per subject -> triples.

Both stages go through their model's batchers, so the object rows of many concurrent requests
(and of many texts in one request) share batches.
"""

from __future__ import annotations

import asyncio

import numpy as np

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle
from app.tasks.extract_decode import Thresholds, build_triples, find_subjects
from app.tasks.extract_explain import ExtractExplainer
from app.tasks.extract_schema import Schema
from app.text import CharVocab


class ExtractTask:
    def __init__(self, model: ModelHandle):
        config = model.config
        self.model = model
        self.vocab = CharVocab.load(model.directory / config["vocab"])
        self.schema = Schema.load(model.directory / config["schema"])
        self.thresholds = Thresholds(**config.get("thresholds", {}))
        self.max_length = int(config["max_length"])
        # /explain: models exported with a gradient graph can say why they found a triple.
        self.explainer = ExtractExplainer(model, self.vocab, self.schema) if "gradient" in config["stages"] else None

    def validate(self, texts: list[str]) -> None:
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"texts[{i}]: empty text")
            if len(text) > self.max_length:
                raise InvalidInput(f"texts[{i}]: {len(text)} characters, over the model's max_length "
                                   f"{self.max_length}; split the text into sentences")

    async def extract(self, texts: list[str], deadline: float) -> list[list[dict]]:
        self.validate(texts)
        subject_rows = [{"token_ids": self.vocab.encode(t)} for t in texts]
        encoded = await self.model.stage("subject").submit(subject_rows, deadline)

        object_rows, owners = [], []
        for i, out in enumerate(encoded):
            n = len(texts[i])
            for span in find_subjects(out["subject_probs"], self.thresholds):
                object_rows.append({"hidden": out["hidden"], "mask": np.ones(n, np.float32),
                                    "subject": np.array([span.start, span.end], np.int64)})
                owners.append((i, span))
        objects = await self.model.stage("object").submit(object_rows, deadline)

        # Decoding is numpy work proportional to the number of subjects: keep it off the event loop.
        def decode() -> list[list[dict]]:
            results: list[list[dict]] = [[] for _ in texts]
            for (i, span), out in zip(owners, objects, strict=True):
                results[i] += build_triples(texts[i], span, out["object_probs"], self.schema, self.thresholds)
            for triples in results:
                triples.sort(key=lambda t: -t["score"])
            return results

        return await asyncio.to_thread(decode)
