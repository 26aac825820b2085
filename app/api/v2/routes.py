"""Open Inference Protocol (KServe v2 / Triton HTTP) for the raw ONNX models of the repository.

Each ONNX stage is one v2 model: a single-stage model keeps its name, a stage of a multi-stage
model is `<model>.<stage>` (e.g. `extract.subject`). Requests go through the same batchers.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app import __version__
from app.api.deps import DeadlineDep, RepositoryDep, SettingsDep
from app.api.schemas import V2_ERRORS, Text, V2ModelReady, V2Ready
from app.api.v2.codec import infer, tensor_metadata
from app.runtime.batcher import SEQ, Batcher
from app.runtime.errors import BadRequest
from app.runtime.repository import READY, UNLOADED, ModelHandle, ModelRepository

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=V2_ERRORS)


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list = Field(description="row-major values, flat or nested")


class RequestedOutput(BaseModel):
    name: str


class InferRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inputs": [{"name": "token_ids", "shape": [1, 4], "datatype": "INT64", "data": [101, 57, 88, 9]}],
        "outputs": [{"name": "subject_probs"}]}]})

    id: Text | None = None
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def v2_models(repo: ModelRepository) -> dict[str, tuple[ModelHandle, str]]:
    """v2 model name -> (model, stage), for every stage named in the model.json files."""
    out = {}
    for handle in repo.models.values():
        stages = list(handle.config.get("stages", {}))
        for stage in stages:
            out[handle.name if len(stages) == 1 else f"{handle.name}.{stage}"] = (handle, stage)
    return out


ModelName = Annotated[str, Path(description="a v2 model: <model> or <model>.<stage>", examples=["extract.subject"])]


def lookup(repo: ModelRepository, name: str) -> tuple[ModelHandle, str]:
    models = v2_models(repo)
    if name not in models:
        raise BadRequest(f"unknown model {name!r}; known: {sorted(models)}")  # as Triton answers
    return models[name]


@router.get("")
async def server_metadata() -> dict:
    return {"name": "zhserve", "version": __version__, "extensions": []}


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


# A readiness 503 carries the readiness body, not the protocol's error body: document it as such.
@router.get("/health/ready", response_model=V2Ready, responses={
    503: {"model": V2Ready, "description": "some model is loading or failed"}})
async def ready(repo: RepositoryDep) -> JSONResponse:
    # a model unloaded through the repository API is out of service on purpose: it does not make the server unready
    states = [h.state for h in repo.models.values() if h.state != UNLOADED]
    ok = bool(states) and all(s == READY for s in states)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}")
async def model_metadata(name: ModelName, repo: RepositoryDep) -> dict:
    handle, stage = lookup(repo, name)
    batcher = handle.stage(stage)
    return {"name": name, "versions": [handle.version], "platform": "onnxruntime_onnx",
            "inputs": tensor_metadata(batcher.inputs), "outputs": tensor_metadata(batcher.outputs)}


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses={
    503: {"model": V2ModelReady, "description": "the model is loading or failed"}})
async def model_ready(name: ModelName, repo: RepositoryDep) -> JSONResponse:
    handle, _ = lookup(repo, name)
    ok = handle.state == READY
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


def batch_rows(inputs: list[Tensor]) -> int:
    """The batch axis: one batcher row per entry."""
    return max((t.shape[0] for t in inputs if t.shape), default=1)


def output_values(batcher: Batcher, inputs: list[Tensor], requested: list[str] | None) -> int:
    """How many values the response would hold (batch and sequence sizes taken from the inputs)."""
    seq = max((t.shape[s.seq_axis + 1] for s in batcher.inputs for t in inputs
               if t.name == s.name and s.seq_axis is not None and len(t.shape) > s.seq_axis + 1), default=1)
    sizes = {"batch": batch_rows(inputs), SEQ: seq}
    return sum(math.prod(d if isinstance(d, int) else sizes.get(d, 1) for d in spec.shape)
               for spec in batcher.outputs if requested is None or spec.name in requested)


@router.post("/models/{name}/infer")
async def model_infer(name: ModelName, body: InferRequest, repo: RepositoryDep, deadline: DeadlineDep,
                      settings: SettingsDep) -> dict:
    handle, stage = lookup(repo, name)
    requested = [o.name for o in body.outputs] if body.outputs else None
    # Outputs can be far larger than inputs (hidden states per token): bound the response, not only the body.
    values = output_values(handle.stage(stage), body.inputs, requested)
    if values > settings.max_v2_output_values:
        raise BadRequest(f"the outputs would hold {values:,} values, over the server's max_v2_output_values "
                         f"{settings.max_v2_output_values:,}: send fewer rows or ask for fewer outputs")
    async with handle.admit({stage: max(batch_rows(body.inputs), 1)}, deadline) as permit:
        outputs = await infer(handle.stage(stage), [t.model_dump() for t in body.inputs], requested, deadline, permit)
    response = {"model_name": name, "model_version": handle.version, "outputs": outputs}
    if body.id is not None:
        response["id"] = body.id
    return response
