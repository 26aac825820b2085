"""`zhserve eval explain`: are the served model's Integrated-Gradients attributions sound and faithful?

On the first N dev-split sentences (training/common/splits.py extract_split), the served pipeline (in-process:
repository, batchers, onnxruntime) finds triples; the top one (highest /extract score) of each
sentence is explained as POST /explain would (default steps, trapezoid, zero baseline), and:

  completeness   |delta| / |F(x) - F(x')|, delta = sum(attributions) - (F(x) - F(x')): how well the
                 quadrature integrates the gradient (median and 90th percentile; goal: median < 1%)
  faithfulness   for k in (1, 3, 5): the mean drop F(x) - F(x~) of the target score when the k characters
                 with the largest positive attributions get the [PAD] embedding, against k characters
                 drawn at random (seeded, any position). Attributions that mean something make the
                 first drop much larger than the second.

F is the explained score (the gradient graph's `score` output: the triple's pointer log-probabilities),
so the drops are in log-probability units; the perturbed texts are scored by the same graph.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

KS = (1, 3, 5)


def dev_texts(data: list[Path], limit: int, split: str = "dev") -> list[str]:
    from training.common.io import read_jsonl
    from training.common.splits import extract_split

    texts: list[str] = []
    for path in data:
        for record in read_jsonl(path):
            if extract_split(record["text"]) == split:
                texts.append(record["text"])
                if limit and len(texts) >= limit:
                    return texts
    return texts


def perturbation_rows(explainer, text: str, target, attributions: np.ndarray, rng: np.random.Generator,
                      draws: int) -> tuple[list[dict], list[tuple[str, int, int]]]:
    """Gradient-stage rows: the input, then per k the top-k perturbation and `draws` random ones."""
    encoding = explainer.tokens.encoding(text)
    inputs, shared = explainer.table[encoding.ids], target.graph_inputs(encoding)
    pad = explainer.table[explainer.tokens.pad_id]
    # Per token (a word piece's characters share its attribution; characters and tokens coincide for the DGCNN).
    per_token = np.array([attributions[start:end].sum() for start, end in encoding.offsets])
    positive = [int(i) for i in np.argsort(-per_token, kind="stable") if per_token[i] > 0 and encoding.is_text[i]]
    text_tokens = np.flatnonzero(encoding.is_text)

    def row(positions) -> dict:
        embeddings = inputs.copy()
        embeddings[list(positions)] = pad
        return {"embeddings": embeddings, **shared}

    rows, labels = [row([])], [("input", 0, 0)]
    for k in KS:
        top = positive[:k]  # fewer than k when fewer characters raised the score
        rows.append(row(top))
        labels.append(("top", k, len(top)))
        for _ in range(draws):
            rows.append(row(rng.choice(text_tokens, size=len(top), replace=False)))
            labels.append(("random", k, len(top)))
    return rows, labels


async def run_eval(models: Path, texts: list[str], draws: int, seed: int, concurrency: int) -> dict:
    from training.common.serving import served_task

    async with served_task(models, "extract") as task:
        if task.explainer is None:
            raise SystemExit(f"model {task.model.name} has no gradient stage: nothing to explain with")
        return await _explain_all(task, texts, draws, seed, concurrency)


async def _explain_all(task, texts: list[str], draws: int, seed: int, concurrency: int) -> dict:
    from tqdm import tqdm

    from app.runtime.errors import InvalidInput
    from app.tasks.extract.explain import resolve_target

    explainer, handle = task.explainer, task.model
    ratios: list[float] = []
    rescored: list[float] = []  # |F(x) from the perturbation batch - F(x) from the IG batch|: should be ~0
    drops: dict[tuple[str, int], list[float]] = {(kind, k): [] for kind in ("top", "random") for k in KS}
    short: dict[int, int] = dict.fromkeys(KS, 0)
    skipped = {"no_triple": 0, "too_long": 0}
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(texts), desc="explain", unit="text", file=sys.stderr)

    async def explain_one(index: int, text: str) -> None:
        deadline = time.monotonic() + 3600
        if len(text) > min(task.limits.max_length, explainer.max_length):
            skipped["too_long"] += 1
            return
        triples = (await task.extract([text], deadline))[0]
        if not triples:
            skipped["no_triple"] += 1
            return
        top = triples[0]  # sorted by score, highest first
        try:
            result = await explainer.explain(text, top, deadline)
        except InvalidInput as exc:  # not expected: /extract's own triples resolve
            raise RuntimeError(f"dev sentence {index}: {exc}") from exc
        difference = result["score"] - result["baseline_score"]
        ratios.append(abs(result["delta"]) / abs(difference) if difference else float("inf"))
        target = resolve_target(text, top, explainer.schema)
        # Unrounded attributions would need a second IG pass; rounding (1e-6) only breaks exact ties.
        attributions = np.array(result["attributions"])
        rows, labels = perturbation_rows(explainer, text, target, attributions,
                                         np.random.default_rng([seed, index]), draws)
        outputs = await handle.stage("gradient").submit(rows, deadline)
        scores = np.array([float(o["score"]) for o in outputs])
        rescored.append(abs(scores[0] - result["score"]))
        per: dict[tuple[str, int], list[float]] = {}
        for (kind, k, count), score in zip(labels[1:], scores[1:], strict=True):
            per.setdefault((kind, k), []).append(scores[0] - score)
            if kind == "top" and count < k:
                short[k] += 1
        for key, values in per.items():  # the random draws of one sentence count as one observation
            drops[key].append(float(np.mean(values)))

    async def one(index: int, text: str) -> None:
        async with gate:
            try:
                await explain_one(index, text)
            finally:
                bar.update(1)

    try:
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
    finally:
        bar.close()

    n = len(ratios)
    if n == 0:
        raise SystemExit("no dev sentence had a triple to explain")
    faithfulness = {f"{kind}{k}": round(float(np.mean(drops[(kind, k)])), 4) for k in KS for kind in ("top", "random")}
    return {
        "task": "explain", "n": n, "sentences": len(texts), "skipped": skipped,
        "completeness_median": round(float(np.median(ratios)), 6),
        "completeness_p90": round(float(np.percentile(ratios, 90)), 6),
        "completeness_max": round(float(np.max(ratios)), 6),
        "faithfulness": faithfulness,
        "score_recheck_max_abs_diff": float(max(rescored)),
        "fewer_positive_than_k": {str(k): short[k] for k in KS},
        "steps": explainer.default_steps, "method": "trapezoid", "baseline": "zero", "random_draws": draws,
        "score": "target log-probability (gradient graph `score`); faithfulness = mean drop F(x) - F(x~) "
                 "with the top-k positive / k random tokens (characters for the DGCNN) set to the [PAD] embedding",
    }


def evaluate_explain(data: list[Path], models: Path, limit: int = 100, split: str | None = None,
                     draws: int = 5, seed: int = 0, concurrency: int = 1) -> dict:
    """One sentence at a time by default, so that every sentence's rows run as one batch of their own."""
    split = split or "dev"
    texts = dev_texts(data, limit, split)
    if limit and len(texts) < limit:
        print(f"only {len(texts)} {split}-split sentences in the data (asked for {limit})", file=sys.stderr)
    print(f"explaining the top triple of {len(texts)} {split}-split sentences with {models}", file=sys.stderr)
    metrics = asyncio.run(run_eval(models, texts, draws, seed, concurrency))
    metrics["split"] = split
    if metrics["n"] < len(texts):
        print(f"{metrics['n']} of {len(texts)} sentences explained (skipped: {metrics['skipped']})", file=sys.stderr)
    return metrics
