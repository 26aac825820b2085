"""Run a served task in-process (repository, batchers, ONNX sessions) for evaluation and benchmarks."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def served_task(models: Path, task_name: str):
    """The loaded task object of the model serving `task_name`, with its batchers running."""
    from app.runtime.metrics import Metrics
    from app.runtime.repository import ModelRepository
    from app.tasks.registry import load_task

    repo = ModelRepository(models, Metrics())
    repo.discover()
    handle = repo.for_task(task_name)
    task = load_task(repo, handle)
    if task is None:
        raise SystemExit(f"model {handle.name} failed to load: {handle.error}")
    repo.start(handle)
    try:
        yield task
    finally:
        await repo.stop()
