"""Reading comprehension data: SQuAD/CMRC 2018 JSON, WebQA JSON and the multi-passage sample format,
all read into one shape: a question, its passages, and each passage's gold answers ([] = no answer)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NO_ANSWER = "no_answer"  # WebQA's marker


@dataclass
class Question:
    id: str
    question: str
    passages: list[str]
    answers: list[list[str]]  # per passage; [] where the passage has no answer
    starts: list[int | None] | None = None  # SQuAD/CMRC: the answer's offset in passage 0, when given
    # Whether the format lets a question go unanswered (multi-passage formats, SQuAD 2.0's is_impossible);
    # SQuAD 1.1 and CMRC 2018 promise an answer in the passage, so they are read without the no-answer option.
    may_be_unanswerable: bool = True

    @property
    def gold(self) -> list[str]:
        """Every acceptable answer; [] when no passage answers the question."""
        return list(dict.fromkeys(a for answers in self.answers for a in answers))


def _squad(data: dict) -> list[Question]:
    out = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa.get("answers", []) if a["text"].strip()]
                starts = [a.get("answer_start") for a in qa.get("answers", []) if a["text"].strip()]
                out.append(Question(str(qa["id"]), qa["question"], [context], [answers], starts,
                                    may_be_unanswerable="is_impossible" in qa))
    return out


def _webqa(data: dict) -> list[Question]:
    """WebQA: {id: {"question", "evidences": {id: {"answer": [...] or ["no_answer"], "evidence"}}}}."""
    out = []
    for qid, item in data.items():
        evidences = list(item["evidences"].values())
        answers = [[a for a in e["answer"] if a and a != NO_ANSWER] for e in evidences]
        out.append(Question(str(qid), item["question"], [e["evidence"] for e in evidences], answers))
    return out


def _samples(data: list) -> list[Question]:
    """[{"question", "id"?, "passages": [{"passage", "answer"}]}], answer "" = none in that passage.
    Records without a question or passages are skipped (the shared samples end with one)."""
    usable = [(i, item) for i, item in enumerate(data) if item.get("question") and item.get("passages")]
    if len(usable) < len(data):
        log.warning("%d records without a question or passages were skipped", len(data) - len(usable))
    return [Question(str(item.get("id", i)), item["question"], [p["passage"] for p in item["passages"]],
                     [[p["answer"]] if p.get("answer") else [] for p in item["passages"]])
            for i, item in usable]


def load(path: str | Path) -> list[Question]:
    """Any of the three formats, recognised by shape."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list):
        return _samples(data)
    if "data" in data:
        return _squad(data)
    return _webqa(data)


def answer_spans(passage: str, answers: list[str], starts: list[int | None] | None = None) -> list[tuple[int, int]]:
    """Every place an answer occurs in the passage, as [start, end) (the given offset first if it checks out)."""
    spans = []
    for k, answer in enumerate(answers):
        given = starts[k] if starts and k < len(starts) else None
        if given is not None and passage[given : given + len(answer)] == answer:
            spans.append((given, given + len(answer)))
        i = passage.find(answer)
        while i >= 0:
            spans.append((i, i + len(answer)))
            i = passage.find(answer, i + 1)
    return sorted(set(spans))
