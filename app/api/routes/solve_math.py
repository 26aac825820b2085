"""POST /solve_math (UniLM seq2seq on the project's BERT, beam search, safe exact evaluation)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DeadlineDep, MathDep, enveloped
from app.api.schemas import ERRORS, SolveMathRequest, SolveMathResponse

router = APIRouter(tags=["math"])


@router.post("/solve_math", response_model=SolveMathResponse, responses=ERRORS)
async def solve_math(body: SolveMathRequest, deadline: DeadlineDep, task: MathDep) -> dict:
    """A Chinese math word problem -> an executable expression and its exact answer. When no candidate
    evaluates, the answer is null and `reason` says why (still a 200: the request itself was fine)."""
    return enveloped(task, await task.solve(body.question, body.beam_size, deadline))
