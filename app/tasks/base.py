"""The task contract: what every capability package (extract, qa, math, mlm) provides to the API.

A task wraps one loaded model: it reads its model.json through a pydantic schema (a misspelt or
missing key fails the load, naming the file and the key), checks requests against the limits
there, turns text into rows for the model's batchers and decodes what comes back. It returns
results only; the API adds the response envelope (model name and version).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from app.runtime.errors import InvalidInput
from app.runtime.repository import ModelHandle


class Section(BaseModel):
    """A model.json object: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFile(Section):
    """The keys every model.json has; each task's schema adds its own sections, `limits` among them."""

    name: str | None = None
    task: str
    description: str = ""
    vocab: str
    architecture: dict[str, Any] = {}  # provenance: how the net was built (also in the ONNX metadata)
    batching: dict[str, float] = {}  # read by the runtime
    stages: dict[str, dict[str, Any]]  # read by the runtime
    variants: dict[str, Any] = {}  # int8/fp16 files per stage and what they measured (read by the runtime)
    quality: dict[str, Any] = {}  # measured figures, the data and the command that measured them
    training: dict[str, Any] = {}  # recipe, data and command


ConfigT = TypeVar("ConfigT", bound=ModelFile)


def read_config(model: ModelHandle, schema: type[ConfigT]) -> ConfigT:
    """The model's model.json parsed by `schema`; ValueError naming the file and every bad key."""
    try:
        return schema.model_validate(model.config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{model.config_path}: {problems}") from None


def check_text(text: str, field: str, limit: int, limit_name: str) -> None:
    """The one text check every task applies: not blank, not over the model.json limit `limit_name`."""
    if not text.strip():
        raise InvalidInput(f"{field}: empty text")
    if len(text) > limit:
        raise InvalidInput(f"{field}: {len(text)} characters, over the model's {limit_name} of {limit}")


class Explainer(Protocol):
    """Integrated-Gradients attributions of a model's score over its input characters (/explain)."""

    async def explain(self, text: str, target: dict, deadline: float, steps: int | None, method: str,
                      baseline: str) -> dict: ...


class Task(Protocol):
    """What the API needs from every task class."""

    kind: ClassVar[str]  # the model.json "task" it serves
    model: ModelHandle
    explainer: Explainer | None  # set when the model was exported with a gradient graph

    def __init__(self, model: ModelHandle) -> None: ...
