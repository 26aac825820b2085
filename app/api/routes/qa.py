"""POST /qa (DGCNN reading comprehension over one or several passages)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DeadlineDep, QADep, enveloped
from app.api.schemas import ERRORS, QARequest, QAResponse

router = APIRouter(tags=["qa"])


@router.post("/qa", response_model=QAResponse, responses=ERRORS)
async def qa(body: QARequest, deadline: DeadlineDep, task: QADep) -> dict:
    """Answer a question from one passage or several (answers voted across passages). "No answer" is a
    legal result: `answer` is null and the candidates still show what came closest."""
    return enveloped(task, await task.answer(body.question, body.all_passages(), deadline, body.top_k,
                                             body.allow_no_answer))
