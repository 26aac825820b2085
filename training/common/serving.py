"""Run a served task in-process (repository, batchers, ONNX sessions) for evaluation and benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tqdm import tqdm


@asynccontextmanager
async def served_task(models: Path, task_name: str):
    """The loaded task object of the model serving `task_name`, with its batchers running; the model files
    are the ones the server would pick (ZHSERVE_VARIANT=int8 measures the int8 variant)."""
    from app.runtime.control import ControlError, ModelControl
    from app.runtime.metrics import Metrics
    from app.runtime.repository import ModelRepository
    from app.settings import Settings
    from app.tasks.registry import build_task, serving_model

    repo, tasks = ModelRepository(models, Metrics(), variant=Settings().variant), {}
    control = ModelControl(repo, build_task, tasks)  # the server's own way to load a model
    handle = serving_model(repo.discover(), task_name)
    if handle is None:
        raise SystemExit(f"no model for task {task_name!r} in {models}")
    try:
        await control.load(handle.name)
    except ControlError as exc:
        raise SystemExit(str(exc)) from None
    try:
        yield tasks[handle.name]
    finally:
        await control.stop()
        await repo.stop()


async def gather_with_progress(items: Sequence, call: Callable[..., Awaitable], desc: str, unit: str,
                               concurrency: int) -> list:
    """`await call(item)` for every item, `concurrency` at a time (so their rows share batches), with a
    progress bar; results in the order of `items`."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=desc, unit=unit)

    async def one(item):
        async with gate:
            try:
                return await call(item)
            finally:
                bar.update(1)

    try:
        return await asyncio.gather(*(one(i) for i in items))
    finally:
        bar.close()
