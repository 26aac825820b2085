"""Handler dependencies: settings, repository, the request deadline, the task serving each endpoint,
and the one place a task's result gets the response envelope (the model name and version)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from app.runtime.control import ModelControl
from app.runtime.errors import Unavailable
from app.runtime.repository import ModelRepository
from app.settings import Settings
from app.tasks.base import Task
from app.tasks.extract import ExtractTask
from app.tasks.math import MathTask
from app.tasks.mlm import MLMTask
from app.tasks.qa import QATask
from app.tasks.registry import serving_model

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


def get_control(request: Request) -> ModelControl:
    return request.app.state.control


RequestTimeout = Annotated[float | None, Header(
    alias="X-Request-Timeout", gt=0, allow_inf_nan=False, examples=[2.5],
    description="seconds this request may take, counted from its arrival: lowers the server's deadline "
                "(request_timeout_s) for this request, never raises it; past it the answer is 504")]


def get_deadline(request: Request, timeout: RequestTimeout = None) -> float:
    """The request's deadline on the time.monotonic() clock, counted from its arrival: the server's
    request_timeout_s, or the client's X-Request-Timeout where shorter (a bad value is refused by validation:
    422, 400 under /v2)."""
    arrived = getattr(request.state, "arrived", None) or time.monotonic()
    limit = request.app.state.settings.request_timeout_s
    return arrived + (limit if timeout is None else min(timeout, limit))


def serving_task(request: Request, kind: str) -> Task:
    """The ready task object of the model that serves `kind` (app/tasks/registry.py's rule); 503 otherwise."""
    repo: ModelRepository = request.app.state.repository
    handle = serving_model(list(repo.models.values()), kind)
    if handle is None:
        raise Unavailable(f"no model for task {kind!r} in {repo.root}")
    task = request.app.state.tasks.get(handle.name)
    if task is None:
        raise Unavailable(f"model {handle.name} is {handle.state}" + (f": {handle.error}" if handle.error else ""))
    return task


def task_of(cls: type[T]):
    """A dependency giving the task object of class `cls` that serves its endpoint. The request counts as using
    that model version until it is done: a reload swaps in a new version beside it and closes this one only
    once idle, so a request ends on the version it started on."""

    async def dependency(request: Request) -> AsyncIterator[T]:
        task = serving_task(request, cls.kind)
        with task.model.using():
            yield task

    return dependency


def enveloped(task: Task, result: dict) -> dict:
    """Every task response names the model and the version that produced it."""
    return {"model": task.model.name, "version": task.model.version, **result}


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
ControlDep = Annotated[ModelControl, Depends(get_control)]
DeadlineDep = Annotated[float, Depends(get_deadline)]
ExtractDep = Annotated[ExtractTask, Depends(task_of(ExtractTask))]
QADep = Annotated[QATask, Depends(task_of(QATask))]
MathDep = Annotated[MathTask, Depends(task_of(MathTask))]
MLMDep = Annotated[MLMTask, Depends(task_of(MLMTask))]
