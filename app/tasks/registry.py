"""Which task class serves a model (by model.json "task"), and which model serves a task.

The rule when several models have the same task: the model named like the task serves it (models/qa
serves /qa); otherwise the first of them by name. The others stay reachable through /v2.
"""

from __future__ import annotations

from app.runtime.repository import ModelHandle
from app.tasks.base import Task
from app.tasks.extract import ExtractTask
from app.tasks.math import MathTask
from app.tasks.mlm import MLMTask
from app.tasks.qa import QATask

TASKS: dict[str, type[Task]] = {t.kind: t for t in (ExtractTask, QATask, MathTask, MLMTask)}


def serving_model(models: list[ModelHandle], kind: str) -> ModelHandle | None:
    """The model that serves task `kind` (the rule above), whatever its state."""
    candidates = sorted((h for h in models if h.task == kind), key=lambda h: (h.name != kind, h.name))
    return candidates[0] if candidates else None


def build_task(handle: ModelHandle) -> Task:
    """The task object serving a loaded model (its model.json "task"); raises naming what is wrong."""
    if handle.task not in TASKS:
        raise ValueError(f"{handle.config_path}: task: {handle.task!r} is not one of {sorted(TASKS)}")
    return TASKS[handle.task](handle)
