"""GET /healthz, /readyz, /v1/models, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ControlDep, RepositoryDep
from app.api.schemas import READINESS, ModelList, Readiness
from app.runtime.repository import LOADING, READY

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=READINESS)
async def readyz(repo: RepositoryDep, control: ControlDep) -> JSONResponse:
    """Readiness: 200 once loading is over and at least one model is ready; failed models are listed, and so are
    new versions that failed to load while the previous one kept serving (`failed_updates`)."""
    states = {h.name: h.state for h in repo.models.values()}
    ready = bool(states) and LOADING not in states.values() and READY in states.values()
    body = {"ready": ready, "models": states, "failed_updates": control.failed_updates()}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/v1/models", response_model=ModelList)
async def models(repo: RepositoryDep, control: ControlDep) -> dict:
    """Every model in the repository: the version serving, task, state, measured quality, and the `update` (a
    version loading beside it, or one that failed to load)."""
    return {"models": [{**h.describe(), "update": u.describe() if (u := control.updates.get(h.name)) else None}
                       for h in repo.models.values()]}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
