"""ASGI middleware: the body-size limits (413), cancelling the work of a client that left, request timing by
endpoint and status, and CORS whose refusals are JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body, is_v2
from app.runtime.batcher import TIMING
from app.runtime.memory import trim
from app.runtime.metrics import Metrics


class BodyLimit:
    """Reads the whole body first (bodies are small) so an oversized one never reaches a handler. /v2 has a
    limit of its own: raw tensors can be far larger than the task routes' texts."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_v2_bytes: int | None = None):
        self.app, self.max_bytes, self.max_v2_bytes = app, max_bytes, max_v2_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.max_v2_bytes if is_v2(scope["path"]) else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(scope, send, limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._reject(scope, send, limit)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        # the body every error of that path has: under /v2 the protocol's {"error": "message"}, as documented
        body = error_body("payload_too_large", f"request body over {limit} bytes", scope["path"])
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class CancelOnDisconnect:
    """uvicorn does not cancel a handler whose client disconnected: once the body is read, watch for
    `http.disconnect` and cancel the handler, so the batchers drop its queued rows before they run
    (counted as zhserve_rows_dropped_total{reason="client_gone"}). Sits inside BodyLimit, which has read the
    whole body, so the handler's first receive() has it and nothing else is read from the client."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        handler = asyncio.current_task()
        watcher: asyncio.Task | None = None
        responded = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not responded:
                scope.setdefault("state", {})["client_gone"] = True
                handler.cancel()

        async def body_then_watch() -> Message:
            nonlocal watcher
            message = await receive()
            if watcher is None and not message.get("more_body", False):
                watcher = asyncio.create_task(watch())
            return message

        async def note_response(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, body_then_watch, note_response)
        except asyncio.CancelledError:
            if not scope.get("state", {}).get("client_gone"):
                raise  # a real cancellation (shutdown): not ours to swallow
            asyncio.current_task().uncancel()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


def covered(spans: list[tuple[float, float]]) -> float:
    """The length of the union of time spans (concurrent stages of one request overlap)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def timing_headers(rows: list[tuple[float, float, float]], total: float) -> list[tuple[bytes, bytes]]:
    """Where the request's time went, in milliseconds, as text-embeddings-inference reports it: inference is
    the time some row of it was running, queue the time some row was waiting while none ran."""
    running = [(ran, done) for _, ran, done in rows]
    waiting = [(enqueued, ran) for enqueued, ran, _ in rows]
    inference = covered(running)
    queue = covered(waiting + running) - inference
    return [(b"x-total-time", f"{total * 1000:.1f}".encode()), (b"x-queue-time", f"{queue * 1000:.1f}".encode()),
            (b"x-inference-time", f"{inference * 1000:.1f}".encode())]


LARGE_BYTES = 1_000_000  # request and response bytes past which the heap is trimmed afterwards


class RequestMetrics:
    """zhserve_request_duration_seconds{endpoint, status}; endpoint is the route template, never the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["arrived"] = time.monotonic()  # the request's deadline counts from here
        started, status = time.perf_counter(), 500
        timing: list[tuple[float, float, float]] = []
        TIMING.set(timing)

        transferred = int(dict(scope.get("headers", [])).get(b"content-length", b"0") or 0)  # body, then response

        async def send_status(message: Message) -> None:
            nonlocal status, transferred
            if message["type"] == "http.response.body":
                transferred += len(message.get("body", b""))
            if message["type"] == "http.response.start":
                status = message["status"]
                total = time.perf_counter() - started
                message = {**message, "headers": [*message.get("headers", []), *timing_headers(timing, total)]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
            if transferred > LARGE_BYTES:
                await asyncio.to_thread(trim)
            if scope.get("state", {}).get("client_gone"):
                status = 499  # nginx's "client closed request": nothing was sent
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.request_duration.labels(endpoint, str(status)).observe(time.perf_counter() - started)


class CORS(CORSMiddleware):
    """Starlette's CORS, its refused preflight (a plain-text 400) answered with the JSON error body of its path."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else {}
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and "origin" in headers \
                and "access-control-request-method" in headers:
            response = self.preflight_response(request_headers=headers)
            if response.status_code == 400:
                kept = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
                body = error_body("cors_refused", response.body.decode(), scope["path"])
                response = JSONResponse(body, status_code=400, headers=kept)
            return await response(scope, receive, send)
        await super().__call__(scope, receive, send)
