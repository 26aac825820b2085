"""Request and response bodies (pydantic), one section per endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator


class ErrorBody(BaseModel):
    type: str = Field(examples=["invalid_input"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    413: "request body too large", 422: "invalid input (the message names the field)",
    429: "model queue full: retry after the Retry-After header", 503: "model not ready",
    504: "deadline passed"}.items()}


# -- /extract -------------------------------------------------------------------------------

class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "《邪少兵王》是冰火未央写的网络小说"},
        {"texts": ["周杰伦出生于台湾省新北市", "《流浪地球》由郭帆执导"]}]})

    text: StrictStr | None = Field(None, description="one text (at most the model's max_length characters)")
    texts: list[StrictStr] | None = Field(None, description="several texts, answered in order", min_length=1)

    @model_validator(mode="after")
    def one_of(self) -> ExtractRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Triple(BaseModel):
    subject: str
    predicate: str
    object: dict[str, str] = Field(description='{"@value": ..., and slots such as "inWork", "onDate"}')
    subject_type: str
    object_type: dict[str, str]
    score: float = Field(description="P(subject) * P(object, predicate | subject), from the pointer probabilities")
    subject_span: list[int] = Field(description="[start, end) character offsets into the input text")
    object_span: list[int] = Field(description="[start, end) of the object's @value")


class ExtractResult(BaseModel):
    text: str
    triples: list[Triple]


class ExtractResponse(BaseModel):
    model: str
    version: str | None
    results: list[ExtractResult]


# -- system ---------------------------------------------------------------------------------

class ModelInfo(BaseModel):
    name: str
    version: str | None
    task: str
    state: str = Field(description="loading, ready or failed")
    error: str | None = None
    providers: list[str]
    quality: dict | None = Field(None, description="measured quality, with the data split and command")
    max_length: int | None = None
    stages: list[str]


class ModelList(BaseModel):
    models: list[ModelInfo]
