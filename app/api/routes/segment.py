"""POST /segment and POST /parse (Perturbed Masking on the project's BERT: app/tasks/mlm)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DeadlineDep, MLMDep, enveloped
from app.api.schemas import ERRORS, ParseRequest, ParseResponse, SegmentRequest, SegmentResponse

router = APIRouter(tags=["segment and parse"])


@router.post("/segment", response_model=SegmentResponse, responses=ERRORS)
async def segment(body: SegmentRequest, deadline: DeadlineDep, task: MLMDep) -> dict:
    """Word segmentation: neighbours join by a rule over their Perturbed Masking impacts and corpus n-gram
    statistics (PMI, branching entropy)."""
    return enveloped(task, {"words": await task.segment(body.text, deadline)})


@router.post("/parse", response_model=ParseResponse, responses=ERRORS)
async def parse(body: ParseRequest, deadline: DeadlineDep, task: MLMDep) -> dict:
    """Dependency heads (Eisner over arc scores from the word impacts, distance, corpus statistics and the
    words' guessed POS classes) and a constituency tree (top-down split of the impact matrix)."""
    return enveloped(task, await task.parse(body.text, body.words, deadline))
