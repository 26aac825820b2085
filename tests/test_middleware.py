"""The ASGI middleware on a bare app: the body limit (413 before any handler) and request timing."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.middleware import BodyLimit, RequestMetrics
from app.runtime.metrics import Metrics


def build(max_bytes: int):
    seen = []

    async def echo(request: Request):
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    metrics = Metrics()
    app = Starlette(routes=[Route("/echo/{name}", echo, methods=["POST"])])
    app = RequestMetrics(BodyLimit(app, max_bytes), metrics)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"), seen, metrics


async def test_a_body_under_the_limit_reaches_the_handler_whole():
    client, seen, _ = build(100)
    async with client:
        r = await client.post("/echo/a", content=b"x" * 100)
    assert r.status_code == 200 and r.json() == {"bytes": 100} and seen == [100]


async def test_an_oversized_body_is_413_json_and_never_reaches_the_handler():
    client, seen, _ = build(100)

    async def chunks():  # no content-length: the limit is counted while reading
        for _ in range(3):
            yield b"x" * 60

    async with client:
        declared = await client.post("/echo/a", content=b"x" * 101)
        streamed = await client.post("/echo/a", content=chunks())
    for r in (declared, streamed):
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    assert seen == []


async def test_requests_are_timed_by_route_template_and_status():
    client, _, metrics = build(100)
    async with client:
        await client.post("/echo/a", content=b"x")
        await client.post("/echo/b", content=b"x" * 200)
    count = metrics.registry.get_sample_value
    assert count("zhserve_request_duration_seconds_count", {"endpoint": "/echo/{name}", "status": "200"}) == 1
    assert count("zhserve_request_duration_seconds_count", {"endpoint": "unmatched", "status": "413"}) == 1


async def test_a_client_that_hangs_up_has_its_handler_cancelled_and_nothing_sent():
    from app.api.middleware import CancelOnDisconnect

    started, cancelled, hang_up = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_handler(scope, receive, send):
        assert (await receive())["body"] == b"{}"
        started.set()
        try:
            await asyncio.Event().wait()  # stands for rows waiting in a batcher
        except asyncio.CancelledError:
            cancelled.set()
            raise

    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await hang_up.wait()
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    metrics = Metrics()
    app = RequestMetrics(BodyLimit(CancelOnDisconnect(slow_handler), 100), metrics)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    serving = asyncio.create_task(app(scope, receive, send))
    await started.wait()
    hang_up.set()
    await serving  # returns: the handler was cancelled, the server goes on
    assert cancelled.is_set() and sent == []
    count = metrics.registry.get_sample_value
    assert count("zhserve_request_duration_seconds_count", {"endpoint": "unmatched", "status": "499"}) == 1


async def test_a_finished_request_is_not_cancelled_by_the_disconnect_after_it():
    from app.api.middleware import CancelOnDisconnect

    async def quick(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0) if messages else await asyncio.Event().wait()

    sent = []

    async def send(message):
        sent.append(message)

    await CancelOnDisconnect(quick)({"type": "http", "method": "POST"}, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_timing_headers_count_overlapping_rows_once():
    from app.api.middleware import covered, timing_headers

    assert covered([(0, 2), (1, 3), (5, 6)]) == 4
    # two concurrent submits: rows wait 0-1 and 0-2, run 1-3 and 2-4
    headers = dict(timing_headers([(0.0, 1.0, 3.0), (0.0, 2.0, 4.0)], total=5.0))
    assert headers == {b"x-total-time": b"5000.0", b"x-queue-time": b"1000.0", b"x-inference-time": b"3000.0"}
