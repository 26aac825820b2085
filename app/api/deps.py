"""Shared handler dependencies: settings, repository, tasks and the request deadline."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from app.runtime.errors import Unavailable
from app.runtime.repository import ModelRepository
from app.runtime.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


def get_deadline(request: Request) -> float:
    """The request's deadline on the time.monotonic() clock."""
    return time.monotonic() + request.app.state.settings.request_timeout_s


def task_for(name: str):
    """Dependency giving the loaded task object for `name` (503 while its model is loading or failed)."""

    def dependency(request: Request):
        task = request.app.state.tasks.get(name)
        if task is None:
            handle = request.app.state.repository.for_task(name)  # Unavailable when there is none
            raise Unavailable(f"model {handle.name} is {handle.state}" + (f": {handle.error}" if handle.error else ""))
        return task

    return dependency


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
DeadlineDep = Annotated[float, Depends(get_deadline)]
