"""Request and response bodies (pydantic), one section per endpoint."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator
from pydantic_core import PydanticCustomError


class ErrorBody(BaseModel):
    type: str = Field(examples=["invalid_input"])
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "the body is not JSON text (for example not UTF-8)", 413: "request body too large",
    422: "invalid input (the message names the field)",
    429: "refused at admission: the model cannot take this request in time; retry after the Retry-After header",
    503: "model not ready", 504: "deadline passed"}.items()}


class V2Error(BaseModel):
    error: str = Field(examples=["input token_ids: shape [1, 8000]: axis 1 is over the stage's max_length 512"])


# The Open Inference Protocol's error body is {"error": "message"}; every client error is a 400 there.
V2_ERRORS = {code: {"model": V2Error, "description": text} for code, text in {
    400: "unknown model or output, tensors that do not fit the model (names, datatypes, shapes, values, lengths), "
         "a response over max_v2_output_values, or a body that is not JSON",
    413: "request body too large", 429: "refused at admission; retry after the Retry-After header",
    503: "model not ready", 504: "deadline passed"}.items()}


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


def _utf8(text: str) -> str:
    """JSON escapes can spell a lone surrogate ("\\ud800"): Python decodes it, but no UTF-8 response can hold it,
    so it is refused here, before any inference, instead of failing at serialisation."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError("lone_surrogate", "the text has a lone surrogate at character {index} "
                                  "(not valid UTF-8)", {"index": exc.start}) from None
    return text


Text = Annotated[StrictStr, AfterValidator(_utf8)]  # every request text: a JSON string that is valid UTF-8


# -- /extract -------------------------------------------------------------------------------

class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "《邪少兵王》是冰火未央写的网络小说"},
        {"texts": ["周杰伦出生于台湾省新北市", "《流浪地球》由郭帆执导"]}]})

    text: Text | None = Field(None, description="one text (at most the model's max_length characters)")
    texts: list[Text] | None = Field(None, description="several texts, answered in order", min_length=1)

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


# -- /segment and /parse ---------------------------------------------------------------------

class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "共同创造美好的新世纪"}]})
    text: Text = Field(description="one text (limit: the mlm model's max_length in /v1/models)")


class SegmentResponse(BaseModel):
    model: str
    version: str | None
    words: list[str]


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "我爱北京天安门"}, {"text": "我爱北京天安门", "words": ["我", "爱", "北京", "天安门"]}]})
    text: Text = Field(description="one sentence (limit: the mlm model's parse.max_length characters)")
    words: list[Text] | None = Field(None, description="gold words spelling the text; segmented by the model "
                                                          "when absent")


class ParseResponse(BaseModel):
    model: str
    version: str | None
    words: list[str]
    heads: list[int] = Field(description="1-based head of each word, 0 for the root (CoNLL-U convention)")
    tree: str = Field(description="binary constituency tree, bracketed")


# -- /solve_math ----------------------------------------------------------------------------

class SolveMathRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question": "学校把135本练习本平均分给3个班，每班多少本？"},
        {"question": "一项工程，甲独做需15天完成，乙独做20天完成，两人合作几天完成？", "beam_size": 6}]})
    question: Text = Field(description="one problem (limit: the math model's max_question_tokens in "
                                            "/v1/models; a number counts as one token)")
    beam_size: int | None = Field(None, description="beams kept per step (default: the model's beam_size, "
                                                    "at most its max_beam_size)")


class MathCandidate(BaseModel):
    expression: str
    answer: str | None = Field(description="the candidate's formatted answer; null when it cannot be evaluated")
    score: float = Field(description="sum of the expression tokens' log-probabilities")
    error: str | None = Field(description="why the expression could not be evaluated")


class SolveMathResponse(BaseModel):
    model: str
    version: str | None
    expression: str | None = Field(description="the best expression that evaluates, the question's numbers written in")
    answer: str | None = Field(description="as a person would write it: a percentage when the question asks for one, "
                                           "whole numbers for 至少/最多 counts, else an integer, a terminating "
                                           "decimal or an exact fraction")
    answer_value: float | None
    fraction: str | None = Field(description="the exact value as a fraction")
    decimal: str | None = Field(description="the value as a decimal (6 places at most)")
    reason: str | None = Field(description="why there is no answer, when answer is null")
    candidates: list[MathCandidate]


# -- /qa ------------------------------------------------------------------------------------

class QARequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question": "《流浪地球》的导演是谁？", "passage": "《流浪地球》是由郭帆执导的科幻电影，于2019年上映。"},
        {"question": "能把太阳的七种颜色全部吸收的物体呈什么颜色", "passages": [
            "物体把太阳光的七种颜色全部吸收，就没有反射光，因此物体是黑色。", "白色的物体反射所有颜色的光。"]}]})

    question: Text = Field(description="the question (limit: the qa model's reading.question_length)")
    passage: Text | None = Field(None, description="one passage (any length up to the model's max_length: "
                                                        "long passages are read in overlapping windows)")
    passages: list[Text] | None = Field(None, description="several passages: answers are voted across them",
                                             min_length=1)
    top_k: int = Field(5, ge=1, le=20, description="candidates returned")
    allow_no_answer: bool = Field(True, description="false: the passages are known to hold the answer (as in "
                                                    "SQuAD 1.1 or CMRC 2018), so the best candidate is returned "
                                                    "however low its score")

    @model_validator(mode="after")
    def one_of(self) -> QARequest:
        if (self.passage is None) == (self.passages is None):
            raise ValueError("give exactly one of `passage` or `passages`")
        return self

    def all_passages(self) -> list[str]:
        return [self.passage] if self.passage is not None else list(self.passages or [])


class QACandidate(BaseModel):
    answer: str
    score: float = Field(description="P(start) * P(end) of the span, summed over the passages that give it")
    passage_index: int = Field(description="the passage of its best span")
    span: list[int] = Field(description="[start, end) character offsets into that passage")


class QAResponse(BaseModel):
    model: str
    version: str | None
    answer: str | None = Field(description="null: no passage answers the question (best score not above "
                                           "no_answer_threshold)")
    score: float = Field(description="the best candidate's score")
    passage_index: int | None
    span: list[int] | None
    no_answer_threshold: float
    candidates: list[QACandidate] = Field(description="best first, even when the answer is null")


# -- /explain -------------------------------------------------------------------------------

class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "extract", "text": "《邪少兵王》是冰火未央写的网络小说",
         "target": {"subject": "邪少兵王", "predicate": "作者", "object": {"@value": "冰火未央"},
                    "subject_span": [1, 5], "object_span": [7, 11]}},
        {"task": "extract", "text": "周杰伦出生于台湾省新北市", "target": {"subject_span": [0, 3]}, "format": "html"},
        {"task": "qa", "text": "周杰伦出生于台湾省新北市，毕业于淡江中学。",
         "target": {"question": "周杰伦出生在哪里？", "answer": "台湾省新北市"}}]})

    task: Literal["extract", "qa"] = Field("extract", description="which hosted model's score to explain")
    text: Text = Field(description="the input text (at most the explainer's max_length characters); qa: the passage")
    target: dict[str, Any] = Field(description="extract: a triple as /extract returned it, or just subject_span (+ "
                                               "predicate and object_span); strings are located when spans are "
                                               "absent. qa: the question and the answer (or its span [start, end] "
                                               "in the passage, as /qa returns it)")
    steps: int | None = Field(None, description="integration steps (default 50; limit in /v1/models)")
    method: Literal["trapezoid", "gauss-legendre"] = "trapezoid"
    baseline: Literal["zero", "pad", "mask"] = Field("zero", description="zero embeddings, or the [PAD] or [MASK] "
                                                                         "embedding at every position")
    format: Literal["json", "html", "png"] = "json"


class ExplainResponse(BaseModel):
    model: str
    version: str | None
    task: str
    target: dict[str, Any] = Field(description="the explained triple and `score_explained`, the formula of the score")
    characters: list[str]
    attributions: list[float] = Field(description="signed Integrated-Gradients attribution per character")
    normalized: list[float] = Field(description="attributions scaled into [-1, 1]")
    score: float = Field(description="F(x): the explained score on the input")
    baseline_score: float = Field(description="F(x') on the baseline")
    delta: float = Field(description="completeness error: sum(attributions) - (score - baseline_score)")
    steps: int
    method: str
    baseline: str


# -- system ---------------------------------------------------------------------------------

class ModelUpdate(BaseModel):
    version: str | None = Field(description="the version loading beside the serving one, or that failed to load")
    state: str = Field(description="loading or failed")
    error: str | None = None


class FailedUpdate(BaseModel):
    version: str | None
    error: str | None


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="the version serving")
    task: str
    state: str = Field(description="loading, ready, failed or unloaded")
    error: str | None = None
    providers: list[str]
    variants: dict[str, str] = Field({}, description="the file each stage serves: fp32, int8 or fp16 (setting variant)")
    quality: dict | None = Field(None, description="measured quality, with the data split and command")
    limits: dict[str, int] | None = Field(None, description="what the model accepts per request (model.json limits)")
    stages: list[str]
    update: ModelUpdate | None = Field(None, description="a new version loading, or one that failed to load while "
                                       "this version kept serving")


class ModelList(BaseModel):
    models: list[ModelInfo]


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="each model's state: loading, ready, failed or unloaded")
    failed_updates: dict[str, FailedUpdate] = Field(
        default_factory=dict, description="models whose new version failed to load (the previous one serves)")


# /readyz answers 503 with its own body (not an error body): load balancers read the status, people the states.
READINESS = {503: {"model": Readiness, "description": "not ready: a model is still loading, or none is ready"}}


# The model repository extension (Triton): POST /v2/repository/index, .../models/{name}/load and /unload.
class RepositoryIndexRequest(BaseModel):
    ready: StrictBool = Field(False, description="only the models ready for inference")


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str | None = Field(None, description="left out when the model has no version folder")
    state: str = Field(description="READY, LOADING or UNAVAILABLE")
    reason: str = Field(description="why it is not ready (the load error, 'unloaded', 'not loaded'); empty if ready")


class RepositoryLoadRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict, description="Triton's; zhserve takes none")


class RepositoryUnloadRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="unload_dependents (bool) is accepted; zhserve models have none")
