"""The FastAPI application: settings, model loading in the lifespan, routers, errors, middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

from app import __version__
from app.api import auth, docs, errors, v2
from app.api.middleware import CORS, BodyLimit, CancelOnDisconnect, RequestMetrics
from app.api.routes import explain, extract, qa, repository, segment, solve_math, system
from app.runtime.batcher import BatchLimits
from app.runtime.control import ModelControl
from app.runtime.metrics import Metrics
from app.runtime.repository import ModelRepository
from app.settings import Settings
from app.tasks.registry import build_task

log = logging.getLogger(__name__)

DESCRIPTION = """Chinese NLP models behind one HTTP API, served by onnxruntime through a dynamic batcher.

Errors are JSON `{"error": {"type", "message"}}`: 401 missing or wrong API key (when keys are configured),
413 body too large, 422 invalid input, 429 queue full (see Retry-After), 503 model not ready, 504 deadline passed.
The header `X-Request-Timeout: <seconds>` shortens one request's deadline.
Metrics for Prometheus at `/metrics`."""
CORS_HEADERS = {"allow_methods": ["GET", "POST"],
                "allow_headers": ["Authorization", "Content-Type", "X-Request-Timeout"],
                "expose_headers": ["Retry-After", "WWW-Authenticate", "X-Total-Time", "X-Queue-Time",
                                   "X-Inference-Time"]}


async def serve_models(control: ModelControl, settings: Settings) -> None:
    """Load every model (each in its own thread, each failure kept to its model), then, with `watch`, poll the
    repository for new models and versions."""
    await control.load_all()
    if settings.watch:
        await control.watch(settings.watch_interval_s)


def openapi(app: FastAPI, public: frozenset[str] | None) -> dict:
    """FastAPI's document, minus the 422 it adds to every /v2 route: the protocol answers 400 instead; with API
    keys (`public`: the paths open without one), the bearer scheme and the 401s."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in schema["paths"].items():
            if path.startswith("/v2"):
                for operation in operations.values():
                    operation["responses"].pop("422", None)
        if public is not None:
            auth.document(schema, public, ("ErrorResponse", "V2Error"))
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    metrics.registry.register(PROCESS_COLLECTOR)
    metrics.registry.register(PLATFORM_COLLECTOR)

    keys = settings.api_key_values()  # read once, at start-up
    public = auth.public_paths(settings.public_metrics) if keys else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("API keys: %s; CORS origins: %s", f"{len(keys)}, public paths {sorted(public)}" if keys else "off",
                 ", ".join(settings.cors_origins) or "off")  # how many keys, never which
        # serve /healthz and /readyz while loading
        loading = asyncio.create_task(serve_models(app.state.control, settings), name="serve-models")
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await app.state.control.stop()
            await app.state.repository.stop()

    app = docs.documented_app(title="zhserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.tasks = settings, metrics, {}
    app.state.repository = ModelRepository(settings.models, metrics, settings.device, settings.intra_op_threads,
                                           BatchLimits(), settings.batching_overrides(), settings.cpu_arena,
                                           settings.variant)
    # a replaced version drains for as long as a request may run, then closes
    app.state.control = ModelControl(app.state.repository, build_task, app.state.tasks,
                                     drain_s=settings.request_timeout_s + 1)
    errors.install(app)
    for router in (extract.router, qa.router, solve_math.router, segment.router, explain.router, system.router,
                   repository.router, v2.routes.router):
        app.include_router(router)
    app.openapi = lambda: openapi(app, public)
    # the last added is the outermost: metrics, CORS, keys, body limit, cancel on disconnect, the routes
    app.add_middleware(docs.PagePolicy)
    app.add_middleware(CancelOnDisconnect)
    max_bytes, max_v2_bytes = settings.body_limits()
    app.add_middleware(BodyLimit, max_bytes=max_bytes, max_v2_bytes=max_v2_bytes)
    if keys:  # before the body limit: without a key, no body is read
        app.add_middleware(auth.RequireKey, keys=keys, public=public, metrics=metrics)
    if settings.cors_origins:  # outside the keys: a browser's preflight carries none, and a 401 gets CORS headers
        app.add_middleware(CORS, allow_origins=settings.cors_origins, **CORS_HEADERS)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: times everything, 401s and 413s included
    return app
