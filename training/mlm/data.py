"""Pretraining text for the project's BERT: the corpus plus the task texts (never evaluation gold),
as one flat stream of character ids with [SEP] between paragraphs, and a held-out share of lines."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.text import CharVocab
from app.text.vocab import MATH_TOKENS
from training.common.embeddings import corpus_lines
from training.common.paths import DATA

log = logging.getLogger(__name__)


def task_texts(data: Path = DATA) -> Iterator[str]:
    """Texts of the tasks' training material. Left out: the /extract test and dev splits, the segmentation
    and parsing files (our evaluation sets) and Ape210K (the math evaluation set)."""
    from training.common.io import read_jsonl
    from training.common.splits import extract_split

    for f in sorted((data / "ie").glob("*/*.json")):
        if "dev" not in f.name and "schema" not in f.name:
            yield from (r["text"] for r in read_jsonl(f) if extract_split(r["text"]) == "train")
    cmrc = json.loads((data / "qa" / "cmrc2018" / "train.json").read_text(encoding="utf-8"))
    for article in cmrc["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"]
            yield from (qa["question"] for qa in paragraph["qas"])
    for f in (data / "math" / "math23k" / "math23k_full.jsonl", data / "math" / "hmwp.jsonl"):
        yield from (r["original_text"] for r in read_jsonl(f))


def is_heldout(line: str, share: int = 200) -> bool:
    return int(hashlib.md5(line.encode("utf-8")).hexdigest(), 16) % share == 0


def build(out: Path, max_chars: int, vocab_size: int) -> CharVocab:
    """Write out/vocab.txt, out/train.npy and out/heldout.npy (uint16 id streams)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [t.strip() for t in task_texts() if t.strip()]
    lines += list(tqdm(corpus_lines(max_chars), desc="corpus", unit=" lines"))
    vocab = CharVocab.build(lines, min_count=3, max_size=vocab_size, always=MATH_TOKENS)
    vocab.save(out / "vocab.txt")
    streams: dict[bool, list[np.ndarray]] = {False: [], True: []}
    sep = np.array([vocab.sep_id], dtype=np.uint16)
    for line in tqdm(lines, desc="encode", unit=" lines"):
        streams[is_heldout(line)] += [vocab.encode(line).astype(np.uint16), sep]
    for heldout, name in ((False, "train"), (True, "heldout")):
        np.save(out / f"{name}.npy", np.concatenate(streams[heldout]))
    log.info("vocab %d, %d lines", len(vocab), len(lines))
    return vocab
