"""Which task class serves a model, by model.json "task"."""

from __future__ import annotations

from app.tasks.extract import ExtractTask

TASKS = {"extract": ExtractTask}
