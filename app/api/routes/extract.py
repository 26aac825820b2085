"""POST /extract."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DeadlineDep, ExtractDep, enveloped
from app.api.schemas import ERRORS, ExtractRequest, ExtractResponse

router = APIRouter(tags=["extract"])


@router.post("/extract", response_model=ExtractResponse, responses=ERRORS)
async def extract(body: ExtractRequest, deadline: DeadlineDep, task: ExtractDep) -> dict:
    """Subject-predicate-object triples (DuIE 2.0 schema, compound objects included) for each text."""
    texts = body.all_texts()
    triples = await task.extract(texts, deadline)
    return enveloped(task, {"results": [{"text": t, "triples": r} for t, r in zip(texts, triples, strict=True)]})
