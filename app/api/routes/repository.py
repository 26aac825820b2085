"""Triton's model repository extension: POST /v2/repository/index, /v2/repository/models/{name}/load and /unload.

Model names are the repository's folders. Load reads the highest version folder and swaps it in live beside the
serving one (app/runtime/control.py); unload takes the model out of service until it is loaded again. Success
is an empty 200; a failure is a 400 {"error": "..."} (as every /v2 error, app/api/errors.py).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

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

router = APIRouter(prefix="/v2/repository", tags=["model repository (v2)"], responses=V2_ERRORS)

ModelFolder = Annotated[str, Path(description="a model: a folder of the repository", examples=["extract"])]
M = TypeVar("M", bound=BaseModel)


def documented(schema: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that reads its body itself (read_body)."""
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema.model_json_schema()}}}}


async def read_body(request: Request, schema: type[M]) -> M:
    """The body as `schema`: an empty body is an empty request. Read as JSON whatever the content type says, as
    Triton does: tritonclient sends none, `curl -d` sends a form type."""
    raw = await request.body()
    if not raw.strip():
        return schema()
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise BadRequest("; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                   for e in exc.errors())) from None


@router.post("/index", response_model=list[RepositoryIndexEntry], response_model_exclude_none=True,
             openapi_extra=documented(RepositoryIndexRequest))
async def index(request: Request, control: ControlDep) -> list[dict]:
    """Every model of the repository, loaded or not, and any version loading or failed beside the serving one;
    {"ready": true}: only the ready ones."""
    body = await read_body(request, RepositoryIndexRequest)
    return control.index(ready_only=body.ready)


@router.post("/models/{name}/load", response_class=Response, responses={200: {"description": "loaded"}},
             openapi_extra=documented(RepositoryLoadRequest))
async def load(name: ModelFolder, request: Request, control: ControlDep) -> Response:
    """Load the model's highest version, or reload it: the new version warms up beside the serving one and then
    takes its traffic; requests already running finish on the old one. If it fails, the old one keeps serving
    and the 400 says so."""
    body = await read_body(request, RepositoryLoadRequest)
    if body.parameters:
        # Triton's "config" and "file:..." override the files on disk; here the repository is the one truth.
        raise BadRequest(f"load parameters {sorted(body.parameters)} are not supported: zhserve loads the "
                         f"repository's files (edit models/{name}/model.json or add a version folder)")
    try:
        await control.load(name)
    except ControlError as exc:
        raise BadRequest(str(exc)) from None
    return Response(status_code=200)


@router.post("/models/{name}/unload", response_class=Response, responses={200: {"description": "unloaded"}},
             openapi_extra=documented(RepositoryUnloadRequest))
async def unload(name: ModelFolder, request: Request, control: ControlDep) -> Response:
    """Take the model out of service: its requests answer 503 until it is loaded again (the watch leaves it
    unloaded too). Requests already running finish first."""
    await read_body(request, RepositoryUnloadRequest)  # unload_dependents: zhserve models have no dependents
    try:
        await control.unload(name)
    except ControlError as exc:
        raise BadRequest(str(exc)) from None
    return Response(status_code=200)
