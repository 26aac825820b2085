"""The FastAPI application: settings, model loading in the lifespan, routers, errors, middleware."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

from app import __version__
from app.api import errors, v2
from app.api.middleware import BodyLimit, CancelOnDisconnect, RequestMetrics
from app.api.routes import explain, extract, qa, segment, solve_math, system
from app.runtime.batcher import BatchLimits
from app.runtime.metrics import Metrics
from app.runtime.repository import ModelHandle, ModelRepository
from app.settings import Settings
from app.tasks.registry import load_task

log = logging.getLogger(__name__)

DESCRIPTION = """Chinese NLP models behind one HTTP API, served by onnxruntime through a dynamic batcher.

Errors are JSON `{"error": {"type", "message"}}`: 413 body too large, 422 invalid input,
429 queue full (see Retry-After), 503 model not ready, 504 deadline passed.
Metrics for Prometheus at `/metrics`."""


async def load_models(app: FastAPI) -> None:
    """Load every model in its own thread; each failure stays with its model."""
    repo: ModelRepository = app.state.repository

    async def load_one(handle: ModelHandle) -> None:
        task = await asyncio.to_thread(load_task, repo, handle)
        if task is None:
            return
        repo.start(handle)
        app.state.tasks[handle.name] = task
        log.info("model %s v%s ready (%s) in %.2fs", handle.name, handle.version, handle.providers, handle.load_seconds)

    await asyncio.gather(*(load_one(h) for h in repo.discover()))


def openapi(app: FastAPI) -> dict:
    """FastAPI's document, minus the 422 it adds to every /v2 route: the protocol answers 400 instead."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in schema["paths"].items():
            if path.startswith("/v2"):
                for operation in operations.values():
                    operation["responses"].pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    metrics.registry.register(PROCESS_COLLECTOR)
    metrics.registry.register(PLATFORM_COLLECTOR)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load_models(app))  # serve /healthz and /readyz while loading
        try:
            yield
        finally:
            loading.cancel()
            await app.state.repository.stop()

    app = FastAPI(title="zhserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.tasks = settings, metrics, {}
    app.state.repository = ModelRepository(settings.models, metrics, settings.device, settings.intra_op_threads,
                                           BatchLimits(), settings.batching_overrides(), settings.cpu_arena,
                                           settings.variant)
    errors.install(app)
    for router in (extract.router, qa.router, solve_math.router, segment.router, explain.router, system.router,
                   v2.routes.router):
        app.include_router(router)
    app.openapi = lambda: openapi(app)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: times everything, 413s included
    return app
