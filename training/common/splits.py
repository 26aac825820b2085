"""Every data split the project uses, by md5 of a stable key, in one place.

Training never sees a dev or test share; pretraining (training/mlm) also skips every task's test share.
"""

from __future__ import annotations

import hashlib


def digest(key: str) -> int:
    return int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16)


def extract_split(text: str) -> str:
    """DuIE / SKE sentences by text: 80% train, 8% dev (thresholds, checkpoints), 12% test (report)."""
    bucket = (digest(text) >> 96) % 100  # the first 8 hex digits
    return "train" if bucket < 80 else "dev" if bucket < 88 else "test"


def qa_split(question_id: str) -> str:
    """A reading-comprehension training file by question id: 90% train, 10% dev (checkpoints, thresholds)."""
    return "dev" if (digest(question_id) >> 96) % 10 == 0 else "train"


def ape_split(problem_id: str) -> str:
    """Our split of Ape210K valid: a fifth "dev" (choices made while training), then "train" and "test"
    halves of the rest."""
    bucket = digest(str(problem_id))
    return "dev" if bucket % 5 == 0 else "train" if bucket // 5 % 2 == 0 else "test"
