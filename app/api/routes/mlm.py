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
    """Word segmentation: neighbours join by a rule over their Perturbed Masking impacts and corpus n-gram
    statistics (PMI, branching entropy)."""
    return {"model": task.model.name, "version": task.model.version, "words": await task.segment(body.text, deadline)}


@router.post("/parse", response_model=ParseResponse, responses=ERRORS)
async def parse(body: ParseRequest, deadline: DeadlineDep, task: MLMTask) -> dict:
    """Dependency heads (Eisner over arc scores from the word impacts, distance, corpus statistics and the
    words' guessed POS classes) and a constituency tree (top-down split of the impact matrix)."""
    result = await task.parse(body.text, body.words, deadline)
    return {"model": task.model.name, "version": task.model.version, **result}
