"""POST /explain: Integrated-Gradients attributions of a hosted model's score, as JSON, HTML or PNG."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import DeadlineDep, enveloped, serving_task
from app.api.render import render_html, render_png
from app.api.schemas import ERRORS, ExplainRequest, ExplainResponse
from app.runtime.errors import InvalidInput

router = APIRouter(tags=["explain"])


@router.post("/explain", response_model=ExplainResponse, responses={
    **ERRORS, 200: {"content": {"application/json": {}, "text/html": {}, "image/png": {}},
                    "description": "attributions (json), or a heatmap page (html) or image (png)"}})
async def explain(body: ExplainRequest, request: Request, deadline: DeadlineDep):
    """Why did the model score this target? Per-character Integrated Gradients with a completeness check."""
    task = serving_task(request, body.task)
    if task.explainer is None:
        raise InvalidInput(f"task: the {body.task} model has no gradient graph to explain with")
    with task.model.using():  # a reload closes this version only once the request is done
        result = enveloped(task, await task.explainer.explain(body.text, body.target, deadline, body.steps,
                                                              body.method, body.baseline))
    if body.format == "html":
        return HTMLResponse(render_html(result))
    if body.format == "png":
        return Response(await asyncio.to_thread(render_png, result), media_type="image/png")
    return result
