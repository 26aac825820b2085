"""POST /qa (DGCNN reading comprehension over one or several passages)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from app.api.deps import DeadlineDep, task_for
from app.api.schemas import ERRORS, QARequest, QAResponse

router = APIRouter(tags=["qa"])
QATask = Annotated[Any, Depends(task_for("qa"))]


@router.post("/qa", response_model=QAResponse, responses=ERRORS)
async def qa(body: QARequest, deadline: DeadlineDep, task: QATask) -> dict:
    """Answer a question from one passage or several (answers voted across passages). "No answer" is a
    legal result: `answer` is null and the candidates still show what came closest."""
    return await task.answer(body.question, body.all_passages(), deadline, body.top_k, body.allow_no_answer)
