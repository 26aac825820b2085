"""Triton's model repository extension: POST /v2/repository/index, /v2/repository/models/{name}/load and /unload.

Model names are the repository's folders. Load reads the highest version folder and swaps it in live beside the
serving one (app/runtime/control.py); unload takes the model out of service until it is loaded again. Success
is an empty 200; a failure is a 400 {"error": "..."} (as every /v2 error, app/api/errors.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from fastapi.responses import Response

from app.api.deps import ControlDep
from app.api.schemas import (
    V2_ERRORS,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    RepositoryUnloadRequest,
)
from app.runtime.control import ControlError
from app.runtime.errors import BadRequest

# Triton clients send their JSON bodies without a Content-Type: take them as JSON all the same.
router = APIRouter(prefix="/v2/repository", tags=["model repository (v2)"], responses=V2_ERRORS,
                   strict_content_type=False)

ModelFolder = Annotated[str, Path(description="a model: a folder of the repository", examples=["extract"])]


@router.post("/index", response_model=list[RepositoryIndexEntry], response_model_exclude_none=True)
async def index(control: ControlDep, body: Annotated[RepositoryIndexRequest | None, Body()] = None) -> list[dict]:
    """Every model of the repository, loaded or not (tritonclient sends an empty body); {"ready": true}: only
    the ready ones."""
    return control.index(ready_only=body is not None and body.ready)


@router.post("/models/{name}/load", response_class=Response, responses={200: {"description": "loaded"}})
async def load(name: ModelFolder, control: ControlDep,
               body: Annotated[RepositoryLoadRequest | None, Body()] = None) -> Response:
    """Load the model's highest version, or reload it: the new version warms up beside the serving one and then
    takes its traffic; requests already running finish on the old one. If it fails, the old one keeps serving
    and the 400 says so."""
    if body is not None and body.parameters:
        # Triton's "config" and "file:..." override the files on disk; here the repository is the one truth.
        raise BadRequest(f"load parameters {sorted(body.parameters)} are not supported: zhserve loads the "
                         f"repository's files (edit models/{name}/model.json or add a version folder)")
    try:
        await control.load(name)
    except ControlError as exc:
        raise BadRequest(str(exc)) from None
    return Response(status_code=200)


@router.post("/models/{name}/unload", response_class=Response, responses={200: {"description": "unloaded"}})
async def unload(name: ModelFolder, control: ControlDep,
                 body: Annotated[RepositoryUnloadRequest | None, Body()] = None) -> Response:
    """Take the model out of service: its requests answer 503 until it is loaded again (the watch leaves it
    unloaded too). Requests already running finish first."""
    try:
        await control.unload(name)
    except ControlError as exc:
        raise BadRequest(str(exc)) from None
    return Response(status_code=200)
