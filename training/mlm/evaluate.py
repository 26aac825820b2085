"""`zhserve eval segment` and `zhserve eval parse` on the served model, with the peers in the same run:
jieba for segmentation, the left- and right-branching chains for parsing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from training.common.serving import gather_with_progress, served_task
from training.mlm.metrics import chain_heads, fitting_half, score_segmentation, uas


@dataclass
class Sentence:
    words: list[str]
    heads: list[int] | None = None
    tags: list[str] | None = None  # universal POS

    @property
    def text(self) -> str:
        return "".join(self.words)


def read_conllu(path: Path) -> list[Sentence]:
    sentences, words, heads, tags = [], [], [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if words:
                sentences.append(Sentence(words, heads, None if "_" in tags else tags))
            words, heads, tags = [], [], []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():  # skip multi-word ranges (1-2) and empty nodes (1.1)
                words.append(cols[1])
                heads.append(int(cols[6]))
                tags.append(cols[3])
    return sentences


def read_segmented(path: Path) -> list[Sentence]:
    """SIGHAN gold (words separated by spaces, one sentence a line) or CoNLL-U."""
    if str(path).endswith(".conllu"):
        return read_conllu(path)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Sentence(line.split()) for line in lines if line.split()]


async def _run_all(models: Path, select, call, desc: str, concurrency: int = 4) -> tuple[list, list]:
    """(items, results): `select(task)` picks the items once the served task is loaded, `call` runs one."""
    async with served_task(models, "mlm") as task:
        items = select(task)
        results = await gather_with_progress(items, lambda item: call(task, item, time.monotonic() + 3600), desc,
                                             "sent", concurrency)
        return items, results


def evaluate_segment(data: list[Path], models: Path, limit: int = 0, words_file: Path | None = None) -> dict:
    sentences = [s for path in data for s in read_segmented(path)]
    if limit:
        sentences = sentences[:limit]
    gold = [s.words for s in sentences]
    known = set(Path(words_file).read_text(encoding="utf-8").split()) if words_file else None
    _, predicted = asyncio.run(_run_all(models, lambda t: sentences, lambda t, s, d: t.segment(s.text, d), "segment"))
    result = {"task": "segment", "n": len(sentences), **score_segmentation(gold, predicted, known),
              "single_characters": score_segmentation(gold, [list(s.text) for s in sentences], known)}
    try:
        import jieba

        jieba.setLogLevel(60)
        result["jieba"] = score_segmentation(gold, [jieba.lcut(s.text) for s in sentences], known)
    except ImportError:
        result["jieba"] = "not installed (pip install jieba)"
    return result


def evaluate_parse(data: list[Path], models: Path, limit: int = 0) -> dict:
    """UAS with gold words on the sentences the model accepts (at most its parse.max_length characters)."""
    every = [s for path in data for s in read_conllu(path)]
    limits: list[int] = []

    def accepted(task) -> list[Sentence]:
        limits.append(task.limits.max_parse_length)
        return [s for s in every if len(s.text) <= task.limits.max_parse_length][: limit or None]

    sentences, predicted = asyncio.run(
        _run_all(models, accepted, lambda t, s, d: t.parse(s.text, s.words, d), "parse"))
    max_length = limits[0]

    def scores(chosen: list[int]) -> dict:
        gold = [sentences[i].heads for i in chosen]
        words = [len(sentences[i].words) for i in chosen]
        return {"n": len(chosen), "uas": uas(gold, [predicted[i]["heads"] for i in chosen]),
                "baselines": {"right_chain": uas(gold, [chain_heads(n, "right") for n in words]),
                              "left_chain": uas(gold, [chain_heads(n, "left") for n in words])}}

    unseen = [i for i, s in enumerate(sentences) if not fitting_half(s.text)]
    return {"task": "parse", **scores(list(range(len(sentences)))),
            "sentences": f"{len(sentences)} of {len(every)} (those of at most {max_length} characters)",
            "held_out": {"note": "sentences the arc rule cannot have been fitted on (app/tasks/mlm/parse.py "
                                 "fitting_half)", **scores(unseen)}}
