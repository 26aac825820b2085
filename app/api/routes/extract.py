"""POST /extract."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from app.api.deps import DeadlineDep, SettingsDep, task_for
from app.api.schemas import ERRORS, ExtractRequest, ExtractResponse
from app.runtime.errors import InvalidInput

router = APIRouter(tags=["extract"])


@router.post("/extract", response_model=ExtractResponse, responses=ERRORS)
async def extract(body: ExtractRequest, settings: SettingsDep, deadline: DeadlineDep,
                  task: Annotated[Any, Depends(task_for("extract"))]) -> dict:
    """Subject-predicate-object triples (DuIE 2.0 schema, compound objects included) for each text."""
    texts = body.all_texts()
    if len(texts) > settings.max_texts:
        raise InvalidInput(f"texts: {len(texts)} texts, over the limit of {settings.max_texts} per request")
    triples = await task.extract(texts, deadline)
    return {"model": task.model.name, "version": task.model.version,
            "results": [{"text": t, "triples": r} for t, r in zip(texts, triples, strict=True)]}
