"""Every error leaves as JSON {"error": {"type", "message"}}, mapped from app.runtime.errors here only.

Under /v2 (Open Inference Protocol) the body is {"error": "message"}, as Triton and KServe clients expect.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.runtime.errors import Overloaded, ZhserveError


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_body(type_: str, message: str, path: str = "") -> dict:
    """The error body for a request path: {"error": message} under /v2, else {"error": {"type", "message"}}."""
    # a message may echo the request (a field name, a value) and with it a lone surrogate that no UTF-8 body holds
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": message} if is_v2(path) else {"error": {"type": type_, "message": message}}


def error_response(status: int, type_: str, message: str, headers: dict | None = None,
                   request: Request | None = None) -> JSONResponse:
    path = request.url.path if request is not None else ""
    return JSONResponse(error_body(type_, message, path), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    def count(request: Request, type_: str) -> None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(type_).inc()

    @app.exception_handler(ZhserveError)
    async def zhserve_error(request: Request, exc: ZhserveError) -> JSONResponse:
        count(request, exc.type)
        headers = {"Retry-After": str(math.ceil(exc.retry_after))} if isinstance(exc, Overloaded) else None
        return error_response(exc.status, exc.type, exc.message, headers, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count(request, "invalid_input")
        messages = [f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors()]
        status = 400 if is_v2(request.url.path) else 422  # v2 clients expect 400
        return error_response(status, "invalid_input", "; ".join(messages), request=request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # keep the exception's headers: a 405 names the methods the route takes in Allow
        return error_response(exc.status_code, "http_error", str(exc.detail), exc.headers, request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        count(request, "internal_error")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}", request=request)
