"""Which task class serves a model, by model.json "task"."""

from __future__ import annotations

import logging

from app.runtime.repository import FAILED, ModelHandle, ModelRepository
from app.tasks.extract import ExtractTask
from app.tasks.math import MathTask
from app.tasks.mlm import PerturbedMaskingTask
from app.tasks.qa import QATask

log = logging.getLogger(__name__)

TASKS = {"extract": ExtractTask, "math": MathTask, "mlm": PerturbedMaskingTask, "qa": QATask}


def load_task(repo: ModelRepository, handle: ModelHandle):
    """Load one model (blocking) and build its task object; None, with the model marked failed, if either fails."""
    repo.load(handle)
    if handle.state == FAILED:
        return None
    try:
        if handle.task not in TASKS:
            raise ValueError(f"unknown task {handle.task!r}")
        return TASKS[handle.task](handle)
    except Exception as exc:  # noqa: BLE001 - isolate: this model fails, the others go on
        log.exception("model %s: task set-up failed", handle.name)
        repo.mark_failed(handle, f"{type(exc).__name__}: {exc}")
        return None
