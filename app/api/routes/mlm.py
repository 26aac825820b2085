"""POST /segment and POST /parse (Perturbed Masking on the project's BERT)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from app.api.deps import DeadlineDep, task_for
from app.api.schemas import ERRORS, ParseRequest, ParseResponse, SegmentRequest, SegmentResponse

router = APIRouter(tags=["segment and parse"])
MLMTask = Annotated[Any, Depends(task_for("mlm"))]


@router.post("/segment", response_model=SegmentResponse, responses=ERRORS)
async def segment(body: SegmentRequest, deadline: DeadlineDep, task: MLMTask) -> dict:
    """Unsupervised word segmentation: neighbours join when their mutual impact is high."""
    return {"model": task.model.name, "version": task.model.version, "words": await task.segment(body.text, deadline)}


@router.post("/parse", response_model=ParseResponse, responses=ERRORS)
async def parse(body: ParseRequest, deadline: DeadlineDep, task: MLMTask) -> dict:
    """Unsupervised dependency heads (Eisner) and a constituency tree (top-down split) from the impact matrix."""
    result = await task.parse(body.text, body.words, deadline)
    return {"model": task.model.name, "version": task.model.version, **result}
