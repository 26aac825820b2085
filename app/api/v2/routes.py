"""Open Inference Protocol (KServe v2 / Triton HTTP) for the raw ONNX models of the repository.

Each ONNX stage is one v2 model: a single-stage model keeps its name, a stage of a multi-stage
model is `<model>.<stage>` (e.g. `extract.subject`). Requests go through the same batchers.
Every model route is also served under /v2/models/{name}/versions/{version}/...: the serving version
answers, any other is a 400. Extensions: binary tensor data (app/api/v2/binary.py), model configuration
and statistics (app/api/v2/configuration.py); the model repository routes live beside these.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope

from app import __version__
from app.api.deps import DeadlineDep, RepositoryDep, SettingsDep
from app.api.schemas import V2_ERRORS, Text, V2ModelReady, V2Ready
from app.api.v2.binary import HEADER_LENGTH, attach_raw, frame, split_body
from app.api.v2.codec import encode_outputs, infer, tensor_metadata
from app.api.v2.configuration import model_config, model_stats
from app.runtime.batcher import SEQ, Batcher
from app.runtime.errors import BadRequest
from app.runtime.repository import READY, UNLOADED, ModelHandle, ModelRepository

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=V2_ERRORS)

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list | None = Field(None, description="row-major values, flat or nested; absent for a binary tensor")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: the tensor is that many raw "
                                                                "bytes after the JSON (binary tensor data)")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true to get the output as raw bytes")


class InferRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inputs": [{"name": "token_ids", "shape": [1, 4], "datatype": "INT64", "data": [101, 57, 88, 9]}],
        "outputs": [{"name": "subject_probs"}]}]})

    id: Text | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: true to get every output "
                                                                "as raw bytes unless an output says otherwise")
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferHTTPRequest(Request):
    """An infer request whose body is its JSON header only, typed JSON whatever Content-Type it came with
    (tritonclient sends none); the raw tensor bytes that followed the header are in `raw`."""

    def __init__(self, scope: Scope, receive: Receive, header: bytes, raw: bytes):
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        super().__init__({**scope, "headers": [*headers, (b"content-type", b"application/json")]}, receive)
        self.header, self.raw = header, raw

    async def body(self) -> bytes:
        return self.header


class InferRoute(APIRoute):
    """Splits the body (binary tensor data extension) before FastAPI parses and validates the JSON header."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def split_then_handle(request: Request) -> Response:
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise BadRequest(f"Content-Encoding {encoding} is not supported: send the body uncompressed")
            header, raw = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
            return await handler(InferHTTPRequest(request.scope, request.receive, header, raw))

        return split_then_handle


def v2_models(repo: ModelRepository) -> dict[str, tuple[ModelHandle, str]]:
    """v2 model name -> (model, stage), for every stage named in the model.json files."""
    out = {}
    for handle in repo.models.values():
        stages = list(handle.config.get("stages", {}))
        for stage in stages:
            out[handle.name if len(stages) == 1 else f"{handle.name}.{stage}"] = (handle, stage)
    return out


ModelName = Annotated[str, Path(description="a v2 model: <model> or <model>.<stage>", examples=["extract.subject"])]
Version = Annotated[str, Path(description="the model's version: only the serving one answers", examples=["1"])]


def lookup(repo: ModelRepository, name: str, version: str | None = None) -> tuple[ModelHandle, str]:
    models = v2_models(repo)
    if name not in models:
        raise BadRequest(f"unknown model {name!r}; known: {sorted(models)}")  # as Triton answers
    handle, stage = models[name]
    if version is not None and version != handle.version:
        serving = f" (version {handle.version} is)" if handle.version else ""
        raise BadRequest(f"model {name!r}: version {version!r} is not served{serving}")
    return handle, stage


@router.get("")
async def server_metadata() -> dict:
    return {"name": "zhserve", "version": __version__, "extensions": EXTENSIONS}


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


# -- statistics of every model (declared before /models/{name}, which would take "stats" for a name) ------------

@router.get("/models/stats", summary="Statistics of every ready model")
async def all_stats(repo: RepositoryDep) -> dict:
    return {"model_stats": [model_stats(name, handle.version, handle.stages[stage])
                            for name, (handle, stage) in sorted(v2_models(repo).items()) if handle.state == READY]}


# -- each model route, unversioned and versioned -----------------------------------------------------------------

def metadata(repo: ModelRepository, name: str, version: str | None) -> dict:
    handle, stage = lookup(repo, name, version)
    batcher = handle.stage(stage)
    return {"name": name, "versions": [handle.version], "platform": "onnxruntime_onnx",
            "inputs": tensor_metadata(batcher.inputs), "outputs": tensor_metadata(batcher.outputs)}


@router.get("/models/{name}")
async def model_metadata(name: ModelName, repo: RepositoryDep) -> dict:
    return metadata(repo, name, None)


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: ModelName, version: Version, repo: RepositoryDep) -> dict:
    return metadata(repo, name, version)


READY_RESPONSES = {503: {"model": V2ModelReady, "description": "the model is loading or failed"}}


def readiness(repo: ModelRepository, name: str, version: str | None) -> JSONResponse:
    handle, _ = lookup(repo, name, version)
    ok = handle.state == READY
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=READY_RESPONSES)
async def model_ready(name: ModelName, repo: RepositoryDep) -> JSONResponse:
    return readiness(repo, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=V2ModelReady, responses=READY_RESPONSES)
async def model_version_ready(name: ModelName, version: Version, repo: RepositoryDep) -> JSONResponse:
    return readiness(repo, name, version)


def configuration(repo: ModelRepository, name: str, version: str | None) -> dict:
    handle, stage = lookup(repo, name, version)
    return model_config(name, handle.stage(stage), handle.config["stages"][stage]["file"], handle.providers)


@router.get("/models/{name}/config", summary="Model configuration (Triton's, as JSON)")
async def model_configuration(name: ModelName, repo: RepositoryDep) -> dict:
    return configuration(repo, name, None)


@router.get("/models/{name}/versions/{version}/config", summary="Model configuration of a version")
async def model_version_configuration(name: ModelName, version: Version, repo: RepositoryDep) -> dict:
    return configuration(repo, name, version)


def statistics(repo: ModelRepository, name: str, version: str | None) -> dict:
    handle, stage = lookup(repo, name, version)
    return {"model_stats": [model_stats(name, handle.version, handle.stage(stage))]}


@router.get("/models/{name}/stats", summary="Model statistics")
async def model_statistics(name: ModelName, repo: RepositoryDep) -> dict:
    return statistics(repo, name, None)


@router.get("/models/{name}/versions/{version}/stats", summary="Model statistics of a version")
async def model_version_statistics(name: ModelName, version: Version, repo: RepositoryDep) -> dict:
    return statistics(repo, name, version)


# -- inference ---------------------------------------------------------------------------------------------------

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


def flag(parameters: dict | None, key: str, default: bool) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key} is {value!r}, not a boolean")
    return value


def parameter_deadline(parameters: dict | None, deadline: float) -> float:
    """Triton's request parameter `timeout` (microseconds) shortens the deadline, never lengthens it."""
    value = (parameters or {}).get("timeout")
    if value is None:
        return deadline
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"parameter timeout is {value!r}, not a positive whole number of microseconds")
    return min(deadline, time.monotonic() + value / 1e6)


def refuse_unsupported(body: InferRequest) -> None:
    """Parameters of extensions this server does not have get a 400, never a silent JSON answer."""
    for kind, tensors in (("input", body.inputs), ("output", body.outputs or [])):
        for t in tensors:
            for key in t.parameters or {}:
                if key.startswith("shared_memory") or key == "classification":
                    raise BadRequest(f"{kind} {t.name}: parameter {key} is not supported (no shared memory or "
                                     f"classification extension)")


async def run_infer(name: str, version: str | None, body: InferRequest, request: Request, repo: ModelRepository,
                    deadline: float, max_values: int) -> Response:
    handle, stage = lookup(repo, name, version)
    refuse_unsupported(body)
    deadline = parameter_deadline(body.parameters, deadline)
    inputs = attach_raw([t.model_dump() for t in body.inputs], getattr(request, "raw", b""))
    requested = [o.name for o in body.outputs] if body.outputs else None
    # Outputs can be far larger than inputs (hidden states per token): bound the response, not only the body.
    values = output_values(handle.stage(stage), body.inputs, requested)
    if values > max_values:
        raise BadRequest(f"the outputs would hold {values:,} values, over the server's max_v2_output_values "
                         f"{max_values:,}: send fewer rows or ask for fewer outputs")
    all_binary = flag(body.parameters, "binary_data_output", False)
    binary = {o.name: flag(o.parameters, "binary_data", all_binary) for o in body.outputs or []}
    async with handle.admit({stage: max(batch_rows(body.inputs), 1)}, deadline) as permit:
        arrays = await infer(handle.stage(stage), inputs, requested, deadline, permit)
    outputs, raw = encode_outputs(arrays, binary if body.outputs else dict.fromkeys(arrays, all_binary))
    header = {"model_name": name, "model_version": handle.version, "outputs": outputs}
    if body.id is not None:
        header["id"] = body.id
    content, header_length = frame(header, raw)
    if not raw:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})

INFER_RESPONSES = {200: {"description": "the outputs: JSON, or (when an output is asked for as binary) a JSON "
                                        f"header of {HEADER_LENGTH} bytes followed by the raw tensors",
                         "content": {"application/json": {},
                                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


async def model_infer(name: ModelName, body: InferRequest, request: Request, repo: RepositoryDep,
                      deadline: DeadlineDep, settings: SettingsDep) -> Response:
    return await run_infer(name, None, body, request, repo, deadline, settings.max_v2_output_values)


async def model_version_infer(name: ModelName, version: Version, body: InferRequest, request: Request,
                              repo: RepositoryDep, deadline: DeadlineDep, settings: SettingsDep) -> Response:
    return await run_infer(name, version, body, request, repo, deadline, settings.max_v2_output_values)


# Registered with their own route class, which reads the body (JSON header + raw tensors) itself.
for _path, _endpoint in (("/models/{name}/infer", model_infer),
                         ("/models/{name}/versions/{version}/infer", model_version_infer)):
    router.add_api_route(_path, _endpoint, methods=["POST"], responses=INFER_RESPONSES,
                         route_class_override=InferRoute)
