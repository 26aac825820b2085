"""Micro precision/recall/F1 over exact (subject, predicate, full object) triples, and the PyTorch
predictor used for checkpoint selection and threshold tuning during training."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.tasks.extract.decode import MAX_SUBJECTS, Span, Thresholds, build_triples, find_subjects
from app.tasks.extract.schema import Schema
from app.text.tokenization import Tokenization


def prf(predicted: Iterable[set], gold: Iterable[set]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of per-sentence sets of triple keys."""
    tp = n_pred = n_gold = 0
    for p, g in zip(predicted, gold, strict=True):
        tp, n_pred, n_gold = tp + len(p & g), n_pred + len(p), n_gold + len(g)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def keys(triples: Iterable) -> set:
    """Triple keys from predicted dicts or gold (subject, predicate, object) tuples."""
    out = set()
    for t in triples:
        if isinstance(t, dict):
            out.add(triple_key(t["subject"], t["predicate"], t["object"]))
        else:
            out.add(triple_key(*t))
    return out


def fitted_encoding(tokens: Tokenization, text: str, max_tokens: int | None):
    """The text's tokens; over an encoder's positions, those of the text's longest prefix that fits, as serving
    would take it (a prefix: offsets into it index the whole text too)."""
    encoding = tokens.encoding(text)
    if max_tokens and len(encoding) > max_tokens:
        encoding = tokens.encoding(text[: int(encoding.offsets[max_tokens - 2, 1])])
    return encoding


class TorchPredictor:
    """Runs an extractor (DGCNN or pretrained encoder) on texts, caching probabilities so thresholds can be tuned
    cheaply; decodes exactly as serving does (app/tasks/extract/decode.py, spans mapped by token offsets)."""

    def __init__(self, net, tokens: Tokenization, schema: Schema, batch_size: int = 64):
        import torch

        self.torch, self.net, self.tokens, self.schema = torch, net.eval(), tokens, schema
        self.batch_size = batch_size
        self.max_tokens = getattr(net, "max_tokens", None)
        self.encoded: dict[str, tuple] = {}
        self.objects: dict[tuple[str, int, int], np.ndarray] = {}

    def _encode(self, texts: list[str]) -> None:
        torch = self.torch
        todo = sorted({t for t in texts if t not in self.encoded}, key=len)
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            encodings = [self._encoding(t) for t in chunk]
            ids = np.zeros((len(chunk), max(len(e) for e in encodings)), dtype=np.int64)
            for b, e in enumerate(encodings):
                ids[b, : len(e)] = e.ids
            with torch.no_grad():
                hidden, mask = self.net.encode(torch.from_numpy(ids).to(next(self.net.parameters()).device))
                probs = torch.sigmoid(self.net.subject_logits(hidden, mask))
            for b, (t, e) in enumerate(zip(chunk, encodings, strict=True)):
                n = len(e)
                self.encoded[t] = (probs[b, :n].cpu().numpy(), hidden[b : b + 1, :n], mask[b : b + 1, :n], e.offsets)

    def _encoding(self, text: str):
        return fitted_encoding(self.tokens, text, self.max_tokens)

    def _objects(self, text: str, spans: list[Span]) -> list[np.ndarray]:
        todo = [s for s in spans if (text, s.start, s.end) not in self.objects]
        if todo:
            _, hidden, mask, _ = self.encoded[text]
            n = len(todo)
            with self.torch.no_grad():
                subject = self.torch.tensor([[s.start, s.end] for s in todo], device=hidden.device)
                logits = self.net.object_logits(hidden.expand(n, -1, -1), mask.expand(n, -1), subject)
                probs = self.torch.sigmoid(logits)
            for s, p in zip(todo, probs.cpu().numpy(), strict=True):
                self.objects[(text, s.start, s.end)] = p
        return [self.objects[(text, s.start, s.end)] for s in spans]

    def predict(self, texts: list[str], th: Thresholds) -> list[list[dict]]:
        self._encode(texts)
        results = []
        for text in texts:
            triples = []
            subject_probs, _, _, offsets = self.encoded[text]
            spans = find_subjects(subject_probs, th, offsets)[:MAX_SUBJECTS]
            for span, probs in zip(spans, self._objects(text, spans), strict=True):
                triples += build_triples(text, span, probs, self.schema, th, offsets)
            results.append(triples)
        return results


def evaluate_torch(net, tokens: Tokenization, schema: Schema, examples, th: Thresholds) -> dict[str, float]:
    predictor = TorchPredictor(net, tokens, schema)
    predicted = predictor.predict([e.text for e in examples], th)
    return prf(map(keys, predicted), (keys(e.triples) for e in examples))


def tune_thresholds(net, tokens: Tokenization, schema: Schema, examples,
                    grid=(0.2, 0.3, 0.4, 0.5, 0.6)) -> tuple[Thresholds, dict[str, float]]:
    """Best dev F1: a grid over start/end thresholds shared by subjects and objects, then each of
    the four thresholds refined on its own (one pass of coordinate ascent)."""
    predictor = TorchPredictor(net, tokens, schema)
    texts, gold = [e.text for e in examples], [keys(e.triples) for e in examples]

    def score(th: Thresholds) -> dict[str, float]:
        return prf(map(keys, predictor.predict(texts, th)), gold)

    candidates = [Thresholds(s, e, s, e) for s, e in itertools.product(grid, grid)]
    best = max(((th, score(th)) for th in candidates), key=lambda b: b[1]["f1"])
    for name in ("subject_start", "subject_end", "object_start", "object_end"):
        for value in grid:
            th = replace(best[0], **{name: value})
            if th != best[0] and (scores := score(th))["f1"] > best[1]["f1"]:
                best = (th, scores)
    return best


async def predict_served(models: Path, texts: list[str], chunk: int = 16, concurrency: int = 8) -> list[list[dict]]:
    """Run texts through the served pipeline in-process: repository, batchers, ONNX stages, decoding."""
    import asyncio
    import time

    from tqdm import tqdm

    from training.common.serving import served_task

    results: list[list[dict]] = [[] for _ in texts]
    gate = asyncio.Semaphore(concurrency)
    async with served_task(models, "extract") as task:
        bar = tqdm(total=len(texts), desc="extract", unit="text")

        async def run(start: int) -> None:
            async with gate:
                part = [t[: task.limits.max_length] for t in texts[start : start + chunk]]
                results[start : start + len(part)] = await task.extract(part, time.monotonic() + 3600)
                bar.update(len(part))

        try:
            await asyncio.gather(*(run(i) for i in range(0, len(texts), chunk)))
        finally:
            bar.close()
    return results


def evaluate_served(data: list[Path], models: Path, limit: int = 0, split: str | None = None) -> dict:
    """`zhserve eval extract`: micro P/R/F1 of the served model on DuIE 2.0 or SKE JSON lines."""
    import asyncio

    from training.common.io import read_jsonl
    from training.common.splits import extract_split
    from training.extract.data import parse_record

    examples = [parse_record(r) for path in data for r in read_jsonl(path)]
    if split:
        examples = [e for e in examples if extract_split(e.text) == split]
    if limit:
        examples = examples[:limit]
    predicted = asyncio.run(predict_served(models, [e.text for e in examples]))
    scores = prf(map(keys, predicted), (keys(e.triples) for e in examples))
    return {"task": "extract", "n": len(examples), **scores}


def triple_key(subject: str, predicate: str, obj: dict[str, str]) -> tuple:
    """What makes two triples the same for scoring: subject, predicate and the full object."""
    return subject, predicate, tuple(sorted(obj.items()))
